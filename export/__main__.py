"""python -m export: train or take a pipeline, convert it, gate it on parity, publish it."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import click

from contract import Task
from export.convert import UnconvertibleStepError
from export.missing import MissingStringsError, for_empty_strings
from export.options import BACKGROUND_OPTION, OUT_OPTION, column_options, tolerance_options
from export.parity import ParityError, Tolerance
from export.saved import SavedModelError, load_fitted
from export.table import ColumnChoices, TableError
from export.training import ESTIMATORS


class Progress:
    """Timestamped progress lines on stderr, so stdout stays the result."""

    def __init__(self) -> None:
        self.started = time.monotonic()

    def __call__(self, message: str) -> None:
        click.echo(f"[{time.monotonic() - self.started:6.1f}s] {message}", err=True)


@click.group()
def cli() -> None:
    """Export scikit-learn pipelines to parity-verified, versioned ONNX models."""


@cli.command()
@OUT_OPTION
@click.option("--only", multiple=True, help="Export only these examples (repeatable).")
def examples(model_dir: Path, only: tuple[str, ...]) -> None:
    """Train and publish the built-in examples."""
    from export.examples import EXAMPLES, train_example
    from export.publish import export_pipeline

    unknown = sorted(set(only) - set(EXAMPLES))
    if unknown:
        raise click.BadParameter(f"unknown example(s) {unknown}; known: {sorted(EXAMPLES)}", param_hint="--only")
    progress = Progress()
    for name, example in EXAMPLES.items():
        if only and name not in only:
            continue
        progress(f"{name}: training ({example.description})")
        trained = train_example(example)
        with refusals():
            published = export_pipeline(
                trained.pipeline,
                name=name,
                model_dir=model_dir,
                training_frame=trained.train_frame,
                check_frame=trained.check_frame,
                training_labels=trained.train_labels,
                check_labels=trained.check_labels,
                task=example.task,
                description=example.description,
                target=trained.target,
                metrics=trained.metrics,
                search=trained.search,
                progress=progress,
            )
        _summarise(published)


@cli.command()
@click.argument("data", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--target", required=True, help="Column to predict.")
@click.option("--estimator", type=click.Choice(sorted(ESTIMATORS)), required=True, help="Model family.")
@click.option("--name", required=True, help="Model name in the repository.")
@click.option("--task", type=click.Choice(["auto", "regression", "classification"]), default="auto", show_default=True)
@click.option(
    "--folds", type=click.IntRange(min=2, max=20), default=5, show_default=True, help="Cross-validation folds."
)
@click.option("--grid", is_flag=True, help="Run a small grid search over the estimator's main parameters.")
@click.option("--test-size", type=click.FloatRange(0.05, 0.5), default=0.2, show_default=True, help="Held-out share.")
@column_options
@OUT_OPTION
@BACKGROUND_OPTION
@tolerance_options
def train(
    data: Path,
    target: str,
    estimator: str,
    name: str,
    task: str,
    folds: int,
    grid: bool,
    test_size: float,
    model_dir: Path,
    background_rows: int,
    atol: float,
    rtol: float,
    max_label_mismatches: int,
    columns: ColumnChoices,
) -> None:
    """Train on a CSV: impute, scale, one-hot encode, cross-validate, convert, verify, publish."""
    from sklearn.model_selection import train_test_split

    from export.publish import export_pipeline
    from export.table import read_training_table
    from export.training import SEED
    from export.training import train as train_pipeline

    progress = Progress()
    chosen_task = None if task == "auto" else cast(Task, task)  # click.Choice allowed only these
    with table_errors():
        table, labels = read_training_table(data, target, columns, chosen_task, progress)
    prepared, chosen = table.frame, table.task
    progress(f"{len(prepared)} rows, {prepared.shape[1]} features, task {chosen}")
    stratify = labels if chosen == "classification" and labels.value_counts().min() >= 2 else None
    train_x, test_x, train_y, test_y = train_test_split(
        prepared, labels, test_size=test_size, random_state=SEED, stratify=stratify
    )
    try:
        result = train_pipeline(train_x, train_y, estimator, chosen, folds=folds, grid=grid, progress=progress)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    metrics = {**result.metrics, "data": table.record()}
    metrics["holdout"] = {"rows": len(test_x), "score": float(result.pipeline.score(test_x, test_y))}
    with refusals():
        published = export_pipeline(
            result.pipeline,
            name=name,
            model_dir=model_dir,
            training_frame=train_x,
            check_frame=test_x,
            training_labels=train_y,
            check_labels=test_y,
            background_rows=background_rows,
            task=chosen,
            description=f"{estimator} trained on {data.name} to predict {target}",
            target=target,
            metrics=metrics,
            search=result.search,
            tolerance=Tolerance(atol, rtol, max_label_mismatches),
            progress=progress,
        )
    _summarise(published)


@cli.command()
@click.argument("model", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--sample",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="CSV of rows the pipeline accepts: gives column names and types, and the parity rows.",
)
@click.option(
    "--target", default=None, help="Target column in the sample, dropped from the inputs and used for a score."
)
@click.option("--name", required=True, help="Model name in the repository.")
@column_options
@OUT_OPTION
@BACKGROUND_OPTION
@tolerance_options
def pipeline(
    model: Path,
    sample: Path,
    target: str | None,
    name: str,
    model_dir: Path,
    background_rows: int,
    atol: float,
    rtol: float,
    max_label_mismatches: int,
    columns: ColumnChoices,
) -> None:
    """Publish a pipeline you already trained (joblib). Load only files you trust: joblib runs pickles."""
    from sklearn.base import is_classifier

    from export.convert import with_column_inputs
    from export.publish import export_pipeline
    from export.table import read_sample_table

    progress = Progress()
    try:
        fitted = load_fitted(model)
    except SavedModelError as exc:
        raise click.BadParameter(str(exc), param_hint="MODEL") from exc
    task: Task = "classification" if is_classifier(fitted) else "regression"
    fitted_columns = getattr(fitted, "feature_names_in_", None)
    expected = None if fitted_columns is None else [str(name) for name in fitted_columns]
    with table_errors():
        table, labels = read_sample_table(sample, columns, target, task, expected, progress)
    prepared = table.frame
    fitted = with_column_inputs(fitted, prepared)
    with refusals():
        fitted, changed = for_empty_strings(fitted, prepared)
    if changed:
        progress(f"missing strings read as '' (tabserve's), not NaN, by {', '.join(changed)}; same answers checked")
    metrics: dict[str, Any] = {"data": table.record()}
    if labels is not None:
        try:
            fitted.predict(prepared)
        except Exception as exc:  # the pipeline refuses its own sample's rows: that is no --target problem
            raise click.BadParameter(f"the pipeline fails on the sample's rows: {exc}", param_hint="--sample") from exc
        try:
            score = float(fitted.score(prepared, labels))
        except (ValueError, TypeError) as exc:  # a classifier given a numeric target, labels it never saw...
            raise click.BadParameter(
                f"the pipeline cannot score column {target!r}: {exc}", param_hint="--target"
            ) from exc
        metrics["sample"] = {"rows": len(prepared), "score": score}
    with refusals():
        published = export_pipeline(
            fitted,
            name=name,
            model_dir=model_dir,
            training_frame=prepared,
            check_frame=prepared,
            # The sample is both: without --target there is no class to stratify by and no score to permute.
            training_labels=labels,
            check_labels=labels,
            background_rows=background_rows,
            task=task,
            description=f"{type(fitted).__name__} from {model.name}",
            target=target,
            metrics=metrics,
            tolerance=Tolerance(atol, rtol, max_label_mismatches),
            progress=progress,
        )
    _summarise(published)


@contextlib.contextmanager
def table_errors() -> Iterator[None]:
    """A CSV or column choice that cannot be used is a usage error, pinned on the option to change when there is one."""
    try:
        yield
    except TableError as exc:
        if exc.option:
            raise click.BadParameter(str(exc), param_hint=exc.option) from exc
        raise click.UsageError(str(exc)) from exc


@contextlib.contextmanager
def refusals() -> Iterator[None]:
    """A refused model is a clean non-zero exit with the reason, and nothing written."""
    try:
        yield
    except (ParityError, UnconvertibleStepError, MissingStringsError) as exc:
        click.echo(f"error: {exc}\nnothing was published.", err=True)
        raise click.exceptions.Exit(1) from exc


def _summarise(published: Any) -> None:
    card = published.card
    parity = ", ".join(
        f"{name} max_abs={item['max_abs_error']:.3g} max_rel={item['max_rel_error']:.3g}"
        for name, item in card["parity"]["outputs"].items()
    )
    cv = card["metrics"].get("cv", {})
    scores = ", ".join(
        f"{metric} {value['mean']:.4f}±{value['std']:.4f}" for metric, value in cv.items() if isinstance(value, dict)
    )
    click.echo(f"{published.name} v{published.version}: {card['estimator']}; CV {scores or 'n/a'}; parity {parity}")


if __name__ == "__main__":
    cli(prog_name="python -m export")
