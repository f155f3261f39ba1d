"""The repository format as both sides use it: cards checked by field, golden vectors held to their own tolerance."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest

from contract import (
    BACKGROUND_FILE,
    CARD_FILE,
    CARD_FORMAT,
    GOLDEN_ATOL,
    GOLDEN_FILE,
    GOLDEN_RTOL,
    MODEL_FILE,
    CardError,
    read_card,
)
from serve.model import Model, ModelLoadError, SessionOptions


def test_an_exported_card_reads_as_the_typed_card(model_dir: Path) -> None:
    card = read_card((model_dir / "penguins" / "1" / CARD_FILE).read_bytes())
    assert card["task"] == "classification" and card["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert card["files"] == {
        "model": "model.onnx",
        "card": "model.json",
        "golden": "golden.json",
        "background": "background.json",
    }
    assert card["format"] == CARD_FORMAT == "tabserve.model/2"


def test_digests_cover_every_file_but_the_card(model_dir: Path) -> None:
    folder = model_dir / "penguins" / "1"
    card = read_card((folder / CARD_FILE).read_bytes())
    on_disk = {path.name for path in folder.iterdir()} - {CARD_FILE}
    assert set(card["digests"]) == on_disk == {MODEL_FILE, GOLDEN_FILE, BACKGROUND_FILE}
    assert card["digests"] == {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in on_disk}
    assert card["digests"][MODEL_FILE] == card["sha256"]


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"format": "tabserve.model/0"},
            "format is 'tabserve.model/0'; this server reads 'tabserve.model/1' or 'tabserve.model/2'",
        ),
        ({"digests": {"../model.onnx": "x"}}, "digests must map plain file names to sha256 hex strings"),
        ({"digests": {"model.onnx": "0" * 64}}, "digests\\['model.onnx'\\] '0+' differs from sha256"),
        ({"background": {"file": "elsewhere.json"}}, "background file 'elsewhere.json' has no entry in digests"),
        ({"sha256": None}, "field 'sha256' must be str, got None"),
        ({"version": True}, "field 'version' must be int, got True"),
        ({"task": "ranking"}, "task must be 'regression' or 'classification', got 'ranking'"),
    ],
)
def test_a_card_that_breaks_the_format_is_refused_naming_the_field(
    model_dir: Path, change: dict[str, object], message: str
) -> None:
    document = {**json.loads((model_dir / "age-weight" / "1" / CARD_FILE).read_bytes()), **change}
    with pytest.raises(CardError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_card(json.dumps(document).encode())
    del document["features"]
    document.update({"format": "tabserve.model/2", "sha256": "x", "version": 1, "task": "regression"})
    document.update({"digests": {}, "background": None})
    with pytest.raises(CardError, match=r"missing field\(s\) \['features'\]"):
        read_card(json.dumps(document).encode())


def rewrite_signed(folder: Path, file_name: str, document: dict[str, object]) -> None:
    """Replace a file as an exporter would: with its digest in the card (unlike a tampered file)."""
    content = json.dumps(document).encode()
    (folder / file_name).write_bytes(content)
    card = json.loads((folder / CARD_FILE).read_bytes())
    card["digests"][file_name] = hashlib.sha256(content).hexdigest()
    (folder / CARD_FILE).write_text(json.dumps(card))


def test_golden_vectors_are_checked_at_load_with_the_tolerance_they_record(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "diabetes" / "1"
    shutil.copytree(model_dir / "diabetes" / "1", folder)
    golden = json.loads((folder / GOLDEN_FILE).read_bytes())
    assert golden["tolerance"] == {"atol": GOLDEN_ATOL, "rtol": GOLDEN_RTOL}
    values = golden["outputs"]["variable"]["data"]
    golden["outputs"]["variable"]["data"] = [value + 1.0 for value in values]  # off by one: beyond 1e-4
    rewrite_signed(folder, GOLDEN_FILE, golden)
    with pytest.raises(ModelLoadError, match="does not reproduce"):
        Model("diabetes", 1, folder, SessionOptions())
    golden["tolerance"] = {"atol": 2.0, "rtol": 0.0}  # an export gated at atol 2 publishes such a model
    rewrite_signed(folder, GOLDEN_FILE, golden)
    assert Model("diabetes", 1, folder, SessionOptions()).golden == golden


def copy_version(model_dir: Path, tmp_path: Path, name: str) -> Path:
    folder = tmp_path / name / "1"
    shutil.copytree(model_dir / name / "1", folder)
    return folder


def test_the_background_loads_as_arrays_of_the_model_inputs(model_dir: Path) -> None:
    model = Model("penguins", 1, model_dir / "penguins" / "1", SessionOptions())
    assert model.background is not None
    assert list(model.background) == model.input_names
    assert {name: (array.shape, array.dtype.kind) for name, array in model.background.items()} == {
        spec.name: ((100, 1), "f" if spec.datatype == "FP32" else "O") for spec in model.inputs
    }
    model.run(model.background)  # a batch the model scores as is


def test_a_model_scores_through_onnxruntimes_binding_with_the_public_runs_answers(model_dir: Path) -> None:
    model = Model("penguins", 1, model_dir / "penguins" / "1", SessionOptions())
    assert model.background is not None
    public = model.session.run(list(model.output_names), model.background)
    direct = model.run(model.background)
    for name, want in zip(model.output_names, public, strict=True):
        assert direct[name].tolist() == want.tolist()
    # serve/model.py calls this binding to skip the public run's per-call checks (~25 us a served
    # one-row request); an onnxruntime without it still serves, only slower, and fails here instead.
    assert hasattr(model.session, "_sess")


@pytest.mark.parametrize("file_name", [BACKGROUND_FILE, GOLDEN_FILE])
def test_a_tampered_file_is_refused_at_load_naming_it(model_dir: Path, tmp_path: Path, file_name: str) -> None:
    folder = copy_version(model_dir, tmp_path, "penguins")
    document = json.loads((folder / file_name).read_bytes())
    document["inputs"]["sex"]["data"][0] = "female" if document["inputs"]["sex"]["data"][0] == "male" else "male"
    (folder / file_name).write_text(json.dumps(document))
    with pytest.raises(ModelLoadError, match=f"{file_name}: sha256 [0-9a-f]{{64}} does not match the card's"):
        Model("penguins", 1, folder, SessionOptions())
    (folder / file_name).unlink()
    with pytest.raises(ModelLoadError, match=f"has no {file_name}"):
        Model("penguins", 1, folder, SessionOptions())


def test_a_format_2_card_written_before_monitoring_reads_with_monitoring_null(model_dir: Path) -> None:
    document = json.loads((model_dir / "penguins" / "1" / CARD_FILE).read_bytes())
    assert document["monitoring"]["features"]  # exporters write it now
    del document["monitoring"]
    assert document["format"] == CARD_FORMAT  # the field is optional: no format change
    assert read_card(json.dumps(document).encode())["monitoring"] is None


def test_a_format_1_card_still_loads_without_background_or_digests(model_dir: Path, tmp_path: Path) -> None:
    folder = copy_version(model_dir, tmp_path, "penguins")
    document = json.loads((folder / CARD_FILE).read_bytes())
    for key in ("digests", "background", "importance", "monitoring"):
        del document[key]
    document["format"] = "tabserve.model/1"
    document["files"].pop("background")
    (folder / CARD_FILE).write_text(json.dumps(document))
    (folder / BACKGROUND_FILE).unlink()
    model = Model("penguins", 1, folder, SessionOptions())
    assert model.background is None
    assert model.card["digests"] == {MODEL_FILE: document["sha256"]}
    assert (model.card["background"], model.card["importance"], model.card["monitoring"]) == (None, None, None)
    assert model.golden is not None  # golden.json, listed in no digest, is still checked
