"""The command-line options several export commands share: where to publish, the parity gate, background rows."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from export.background import DEFAULT_BACKGROUND_ROWS
from export.parity import Tolerance

OUT_OPTION = click.option(
    "--out",
    "model_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("models"),
    show_default=True,
    help="Model repository to publish into (models/<name>/<version>/).",
)


def tolerance_options(command: Any) -> Any:
    """--atol/--rtol/--max-label-mismatches: the parity gate's thresholds."""
    defaults = Tolerance()
    for option in reversed(
        [
            click.option(
                "--atol", type=float, default=defaults.atol, show_default=True, help="Parity: absolute tolerance."
            ),
            click.option(
                "--rtol", type=float, default=defaults.rtol, show_default=True, help="Parity: relative tolerance."
            ),
            click.option(
                "--max-label-mismatches",
                type=click.IntRange(min=0),
                default=defaults.max_label_mismatches,
                show_default=True,
                help="Parity: class labels allowed to differ.",
            ),
        ]
    ):
        command = option(command)
    return command


BACKGROUND_OPTION = click.option(
    "--background-rows",
    type=click.IntRange(min=0),
    default=DEFAULT_BACKGROUND_ROWS,
    show_default=True,
    help="Training rows kept in background.json for explanations (stratified by class); 0 writes none.",
)
