"""Session fixtures: the built-in examples are trained and exported once, then shared."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from export.__main__ import cli as export_cli

EXAMPLE_NAMES = ["age-weight", "diabetes", "breast-cancer", "penguins"]


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model repository holding version 1 of every built-in example."""
    out = tmp_path_factory.mktemp("models")
    result = CliRunner().invoke(export_cli, ["examples", "--out", str(out)])
    assert result.exit_code == 0, result.output
    return out


def read_card(model_dir: Path, name: str, version: int = 1) -> dict[str, Any]:
    card: dict[str, Any] = json.loads((model_dir / name / str(version) / "model.json").read_text())
    return card


def read_golden(model_dir: Path, name: str, version: int = 1) -> dict[str, Any]:
    golden: dict[str, Any] = json.loads((model_dir / name / str(version) / "golden.json").read_text())
    return golden
