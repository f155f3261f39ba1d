"""Taps: categories counted off the model's own tensors give exactly the counts of matching every value."""

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


def test_the_exporter_names_taps_and_the_server_counts_exactly_the_same_off_them(model_dir: Path) -> None:
    model = Model("penguins", 1, model_dir / "penguins" / "1", SessionOptions())
    card = model.card
    assert card["monitoring"] is not None
    assert sorted(card["monitoring"]["taps"]) == ["island", "sex"]
    assert sorted(model.taps) == ["island", "sex"] and model.scores == "probabilities"
    assert [spec.name for spec in model.outputs] == ["label", "probabilities"], "taps are not the model's outputs"

    by_value = QualityMonitor(card, model.input_names, "label", window_rows=300)
    tapped = QualityMonitor(card, model.input_names, "label", window_rows=300)
    tapped.read_off(model.taps, model.scores)
    assert sorted(tapped.taps) == ["island", "sex"] and tapped.label_scores is not None
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
    assert reader.slots(labels, scores, tally.slot_of.__getitem__).tolist() == [0, 1, 1, 0]
