"""The repository format as both sides use it: cards checked by field, golden vectors held to their own tolerance."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from contract import CARD_FILE, GOLDEN_ATOL, GOLDEN_FILE, GOLDEN_RTOL, CardError, read_card
from serve.model import Model, ModelLoadError, SessionOptions


def test_an_exported_card_reads_as_the_typed_card(model_dir: Path) -> None:
    card = read_card((model_dir / "penguins" / "1" / CARD_FILE).read_bytes())
    assert card["task"] == "classification" and card["classes"] == ["Adelie", "Chinstrap", "Gentoo"]
    assert card["files"] == {"model": "model.onnx", "card": "model.json", "golden": "golden.json"}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"format": "tabserve.model/0"}, "format is 'tabserve.model/0'; this server reads 'tabserve.model/1'"),
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
    document.update({"format": "tabserve.model/1", "sha256": "x", "version": 1, "task": "regression"})
    with pytest.raises(CardError, match=r"missing field\(s\) \['features'\]"):
        read_card(json.dumps(document).encode())


def test_golden_vectors_are_checked_at_load_with_the_tolerance_they_record(model_dir: Path, tmp_path: Path) -> None:
    folder = tmp_path / "diabetes" / "1"
    shutil.copytree(model_dir / "diabetes" / "1", folder)
    golden = json.loads((folder / GOLDEN_FILE).read_bytes())
    assert golden["tolerance"] == {"atol": GOLDEN_ATOL, "rtol": GOLDEN_RTOL}
    values = golden["outputs"]["variable"]["data"]
    golden["outputs"]["variable"]["data"] = [value + 1.0 for value in values]  # off by one: beyond 1e-4
    (folder / GOLDEN_FILE).write_text(json.dumps(golden))
    with pytest.raises(ModelLoadError, match="does not reproduce"):
        Model("diabetes", 1, folder, SessionOptions())
    golden["tolerance"] = {"atol": 2.0, "rtol": 0.0}  # an export gated at atol 2 publishes such a model
    (folder / GOLDEN_FILE).write_text(json.dumps(golden))
    assert Model("diabetes", 1, folder, SessionOptions()).golden == golden
