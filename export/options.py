"""The command-line options several export commands share: where to publish, the parity gate, background rows,
the columns of a user's CSV."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import click

from export.background import DEFAULT_BACKGROUND_ROWS
from export.parity import Tolerance
from export.table import ColumnChoices, split_na_values

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


def column_options(command: Any) -> Any:
    """--drop/--categorical/--numeric/--na-values, handed to the command as one `columns: ColumnChoices`."""

    @functools.wraps(command)
    def with_columns(
        *args: Any, drop: tuple[str, ...], categorical: tuple[str, ...], numeric: tuple[str, ...],
        na_values: tuple[str, ...], **kwargs: Any,
    ) -> Any:  # fmt: skip
        return command(*args, columns=ColumnChoices(drop, categorical, numeric, split_na_values(na_values)), **kwargs)

    for option in reversed(
        [
            click.option(
                "--drop",
                multiple=True,
                metavar="COL",
                help="Leave this column out (repeatable): IDs, names, free text.",
            ),
            click.option(
                "--categorical",
                multiple=True,
                metavar="COL",
                help="Read this column as categories, also when it holds numbers (repeatable).",
            ),
            click.option(
                "--numeric",
                multiple=True,
                metavar="COL",
                help="Read this column as numbers; a value that is not one is an error (repeatable).",
            ),
            click.option(
                "--na-values",
                multiple=True,
                metavar="A,B",
                help="Strings that also mean missing, comma-separated (repeatable), e.g. NA,None. "
                "By default only empty fields are missing.",
            ),
        ]
    ):
        with_columns = option(with_columns)
    return with_columns
