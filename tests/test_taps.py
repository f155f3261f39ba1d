"""How monitoring reads batches (off the model's own tensors, or a one-row batch as its values) gives exactly
the counts of matching every value of the batches' arrays."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest

from serve.model import Model, SessionOptions
from serve.quality import QualityMonitor
from serve.taps import LabelScores, with_outputs
from serve.watched import Tally


def figures(monitor: QualityMonitor) -> list[tuple[Any, ...]]:
    monitor.flush()
    tallies = [*monitor.inputs, *([monitor.prediction] if monitor.prediction else [])]
    return [(tally.name, tally.values, tally.missing, tally.unseen, tally.low, tally.high, tally.bins.tolist(),
             tally.window().tolist()) for tally in tallies]  # fmt: skip


def penguin_batches(model: Model, batches: int, seed: int) -> list[dict[str, Any]]:
    """Background rows resampled, with missing, unseen and the imputer's own fill value ("missing") mixed in."""
    generator = np.random.default_rng(seed)
    assert model.background is not None
    feeds = []
    for _ in range(batches):
        rows = int(generator.integers(1, 60))
        picks = generator.integers(0, len(model.background["island"]), rows)
        feed = {name: values[picks].copy() for name, values in model.background.items()}
        for name in ("island", "sex"):
            column = feed[name].reshape(-1)
            for index, draw in enumerate(generator.random(rows)):
                column[index] = (
                    "" if draw < 0.1 else "Mars" if draw < 0.2 else "missing" if draw < 0.25 else column[index]
                )
        feed["bill_length_mm"][generator.random(rows) < 0.1] = np.nan
        feeds.append(feed)
    return feeds


@pytest.mark.parametrize(
    ("read", "label_off_scores"),
    [(["island", "sex"], True), (["island", "sex"], False), (["island"], True)],
    ids=["label off the scores", "label by value", "sex by value among tapped batches"],
)
def test_the_exporter_names_taps_and_the_server_counts_exactly_the_same_off_them(
    model_dir: Path, read: list[str], label_off_scores: bool
) -> None:
    model = Model("penguins", 1, model_dir / "penguins" / "1", SessionOptions())
    card = model.card
    assert card["monitoring"] is not None
    assert sorted(card["monitoring"]["taps"]) == ["island", "sex"]
    assert sorted(model.taps) == ["island", "sex"] and model.scores == "probabilities"
    assert [spec.name for spec in model.outputs] == ["label", "probabilities"], "taps are not the model's outputs"

    by_value = QualityMonitor(card, model.input_names, "label", window_rows=300)
    tapped = QualityMonitor(card, model.input_names, "label", window_rows=300)
    # Without the scores (a regressor, or scores that do not give the label) a tapped batch keeps its labels.
    tapped.read_off({name: model.taps[name] for name in read}, model.scores if label_off_scores else None)
    assert sorted(tapped.taps) == read and (tapped.label_scores is not None) == label_off_scores
    for index, feed in enumerate(penguin_batches(model, 60, seed=3)):
        outputs, with_taps = model.run_tapped(feed)
        assert outputs.keys() == {"label", "probabilities"}
        rows = len(outputs["label"])
        by_value.record(feed, outputs, rows)
        # Every fifth batch as a cached answer arrives: no taps, counted by value between tapped ones.
        tapped.record(feed, outputs if index % 5 == 0 else with_taps, rows)
        if index % 17 == 0:
            by_value.flush()
            tapped.flush()
    want = figures(by_value)
    assert figures(tapped) == want
    island = want[0]
    assert island[2] > 0 and island[3] > 0, "the batches held missing and unseen islands"


def test_a_tap_that_does_not_hold_is_not_used_and_the_model_still_serves(
    model_dir: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "penguins" / "1"
    shutil.copytree(model_dir / "penguins" / "1", folder)
    card = json.loads((folder / "model.json").read_text())
    taps = card["monitoring"]["taps"]
    taps["island"]["missing"], taps["sex"]["missing"] = taps["sex"]["missing"], taps["island"]["missing"]
    (folder / "model.json").write_text(json.dumps(card))  # the card is not in its own digests
    with caplog.at_level(logging.WARNING):
        swapped = Model("penguins", 1, folder, SessionOptions())
    assert swapped.taps == {}
    assert "the card's tap does not hold" in caplog.text

    taps["island"]["one_hot"] = "no such tensor"
    (folder / "model.json").write_text(json.dumps(card))
    unbuildable = Model("penguins", 1, folder, SessionOptions())
    assert unbuildable.taps == {} and [spec.name for spec in unbuildable.outputs] == ["label", "probabilities"]
    assert unbuildable.golden is not None, "the golden vectors were still checked"


def test_added_outputs_are_the_model_plus_those_outputs(model_dir: Path) -> None:
    content = (model_dir / "penguins" / "1" / "model.onnx").read_bytes()
    before = onnx.load_from_string(content)
    after = onnx.load_from_string(with_outputs(content, ["variable201out", "impc01"]))
    assert [value.name for value in after.graph.output] == [value.name for value in before.graph.output] + [
        "variable201out",
        "impc01",
    ]
    del after.graph.output[len(before.graph.output) :]
    assert after == before


def test_a_label_the_top_score_does_not_give_is_counted_by_its_value() -> None:
    tally = Tally("prediction", "categorical", None, None, ("a", "b", "c"), None, None, window_rows=10)
    scores = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1], [0.5, 0.5, 0.0], [0.2, 0.3, 0.5]], dtype=np.float32)
    labels = np.array(["a", "b", "b", "a"], dtype=object)  # a tie broken the other way; a label not the top score
    reader = LabelScores("probabilities", np.array(["a", "b", "c"], dtype=object))
    assert reader.slots(labels, scores, tally.slot_of).tolist() == [0, 1, 1, 0]


@pytest.mark.parametrize("name", ["penguins", "diabetes", "breast-cancer"])
def test_one_row_batches_kept_as_values_count_exactly_what_the_same_rows_count_as_arrays(
    model_dir: Path, name: str
) -> None:
    """One-row batches are kept as Python values until the flush (QualityMonitor._record_row); every figure
    must be the same as for the same rows in batches of arrays: labels, a regressor's values, missing and
    unseen values, with cached answers' list columns and larger (tapped) batches mixed in."""
    model = Model(name, 1, model_dir / name / "1", SessionOptions())
    feeds = penguin_batches(model, 25, seed=11) if name == "penguins" else _background_batches(model, 25, seed=11)
    single = QualityMonitor(model.card, model.input_names, model.output_names[0], window_rows=10)
    batched = QualityMonitor(model.card, model.input_names, model.output_names[0], window_rows=10)
    for monitor in (single, batched):
        monitor.read_off(model.taps, model.scores)
    for index, feed in enumerate(feeds):
        rows = len(feed[model.input_names[0]])
        if rows == 1:  # not a pair: `batched` would keep it as values too
            continue
        outputs, with_taps = model.run_tapped(feed)
        batched.record(feed, with_taps, rows)
        if index % 4 == 3:  # a larger batch among the one-row ones
            single.record(feed, with_taps, rows)
        else:
            for row in range(rows):
                one = {input_name: column[row : row + 1] for input_name, column in feed.items()}
                answer = {output_name: values[row : row + 1] for output_name, values in outputs.items()}
                if index % 4 == 2:  # a cached answer of one row: plain JSON columns are lists
                    one = {input_name: column.reshape(-1).tolist() for input_name, column in one.items()}
                single.record(one, answer, 1)
        if index % 5 == 4:  # a 10-row window after flushes that end in arrays (19) and in values (24): the order
            # The one-row path is what is under test: `single` must hold one-row values, not batches, here.
            assert any(type(entry) is list for entry in single._pending)
            assert figures(single) == figures(batched), index
    want = figures(batched)
    assert figures(single) == want
    assert sum(tally[1] for tally in want) > 0
    if name == "penguins":
        island = want[0]
        assert island[2] > 0 and island[3] > 0, "missing and unseen islands went through one-row batches"


def test_one_row_values_of_an_integer_classifier_are_matched_as_text_like_its_batches() -> None:
    """The examples' classifiers have string labels; an integer classifier's labels are its classes as text."""
    card: Any = {
        "task": "classification",
        "classes": [0, 1],
        "monitoring": None,
        "features": [{"name": "x", "kind": "numeric", "minimum": 0.0, "maximum": 1.0}],
    }
    single = QualityMonitor(card, ["x"], "label", window_rows=10)
    batched = QualityMonitor(card, ["x"], "label", window_rows=10)
    values = np.array([[0.5], [2.0], [np.nan], [0.25]], dtype=np.float32)
    labels = np.array([1, 0, 1, 1], dtype=np.int64)
    batched.record({"x": values}, {"label": labels}, 4)
    for row in range(4):
        single.record({"x": values[row : row + 1]}, {"label": labels[row : row + 1]}, 1)
    want = figures(batched)
    assert figures(single) == want
    assert want[1][:4] == ("prediction", 4, 0, 0) and want[1][6] == [1, 3, 0], "labels 0 and 1 are classes, not unseen"


def test_one_row_values_whose_dtype_changes_count_as_their_arrays_would() -> None:
    """The flush rebuilds one-row values with the first batch's dtypes (every front end gives the model's);
    longer text after shorter, or NaN after integers, still counts as the arrays joined would, and never
    fails the request that flushes."""
    card: Any = {
        "task": "classification",
        "classes": ["a", "b"],
        "monitoring": None,
        "features": [
            {"name": "c", "kind": "categorical", "categories": ["ab", "abcdef"]},
            {"name": "x", "kind": "numeric", "minimum": 0.0, "maximum": 5.0},
        ],
    }
    rows = [("ab", np.array([1]), "a"), ("abcdef", np.array([np.nan]), "b"), ("zz", np.array([7]), "a")]
    single = QualityMonitor(card, ["c", "x"], "label", window_rows=10)
    for text, number, label in rows:
        single.record({"c": np.array([text]), "x": number}, {"label": np.array([label], dtype=object)}, 1)
    batched = QualityMonitor(card, ["c", "x"], "label", window_rows=10)
    texts, numbers, labels = zip(*rows, strict=True)
    batched.record({"c": np.array(texts), "x": np.concatenate(numbers)}, {"label": np.array(labels, dtype=object)}, 3)
    want = figures(batched)
    assert figures(single) == want
    assert want[0][1:4] == (3, 0, 1) and want[0][6] == [1, 1, 1], "'abcdef' is a category, not 'ab' cut short"
    assert want[1][1:3] == (3, 1), "the NaN is missing"


def _background_batches(model: Model, batches: int, seed: int) -> list[dict[str, Any]]:
    """Background rows resampled in batches of 1-20 rows, a tenth of the first numeric input missing."""
    generator = np.random.default_rng(seed)
    assert model.background is not None
    first = next(name for name, values in model.background.items() if values.dtype.kind == "f")
    feeds = []
    for _ in range(batches):
        rows = int(generator.integers(1, 20))
        picks = generator.integers(0, len(model.background[first]), rows)
        feed = {name: values[picks].copy() for name, values in model.background.items()}
        feed[first][generator.random(rows) < 0.1] = np.nan
        feeds.append(feed)
    return feeds
