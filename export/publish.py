"""Convert, gate and publish: the one path every exported model takes into the repository."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator

from contract import BACKGROUND_FILE, CARD_FILE, GOLDEN_FILE, MODEL_FILE, BackgroundCard, ModelCard, Task, read_card
from export import card as cards
from export.background import DEFAULT_BACKGROUND_ROWS, DEFAULT_BACKGROUND_SEED, sample_background
from export.fidelity import convert_with_parity
from export.importance import MAX_IMPORTANCE_ROWS, measure_importance
from export.monitoring import measure_reference
from export.parity import ParityError, ParityReport, Tolerance, compare_outputs, onnx_feed
from export.repository import check_name, publish
from export.taps import find_taps

MAX_PARITY_ROWS = 2000
DEFAULT_TOLERANCE = Tolerance()
MAX_GOLDEN_ROWS = 64


@dataclass(frozen=True)
class Published:
    """Where a model went and what the gate measured."""

    name: str
    version: int
    path: Path
    parity: ParityReport
    card: ModelCard


def export_pipeline(
    pipeline: BaseEstimator,
    *,
    name: str,
    model_dir: Path,
    training_frame: pd.DataFrame,
    check_frame: pd.DataFrame,
    task: Task,
    description: str,
    target: str | None = None,
    metrics: dict[str, Any] | None = None,
    search: dict[str, Any] | None = None,
    tolerance: Tolerance = DEFAULT_TOLERANCE,
    training_labels: pd.Series | None = None,
    check_labels: pd.Series | None = None,
    background_rows: int = DEFAULT_BACKGROUND_ROWS,
    background_seed: int = DEFAULT_BACKGROUND_SEED,
    progress: Callable[[str], None] = lambda message: None,
) -> Published:
    """Convert `pipeline`, check it on `check_frame` plus edge rows, and publish it if it passes.

    `training_frame` (prepared: float32 numbers, '' for missing strings) gives the features' ranges and
    categories, and the explainer's background rows (`background_rows` of them, 0 for none; stratified by
    `training_labels` for a classifier); `check_frame` holds the held-out rows, and with `check_labels`
    the permutation importance; the monitoring reference describes both (training inputs, held-out
    predictions). Raises ParityError or UnconvertibleStepError and writes nothing when the
    model is refused.
    """
    check_name(name)
    converted = convert_with_parity(pipeline, training_frame, check_frame, tolerance, MAX_PARITY_ROWS, progress)
    model, features, rows, expected, report = (
        converted.model, converted.features, converted.rows, converted.expected, converted.report
    )  # fmt: skip
    input_names = [value.name for value in model.graph.input]
    golden_index = _golden_rows(len(rows) - converted.edges, converted.edges)
    golden_feed = {key: value[golden_index] for key, value in onnx_feed(rows, input_names).items()}
    golden_outputs = {key: value[golden_index] for key, value in expected.items()}
    classes = [_plain(label) for label in getattr(pipeline, "classes_", [])] or None

    background: BackgroundCard | None = None
    background_feed: dict[str, Any] = {}
    if background_rows:
        strata = training_labels if task == "classification" else None
        drawn = sample_background(training_frame, strata, background_rows, background_seed)
        background = BackgroundCard(
            file=BACKGROUND_FILE, rows=len(drawn.frame), seed=drawn.seed, stratified=drawn.stratified
        )
        background_feed = onnx_feed(drawn.frame, input_names)
    progress(f"monitoring reference from {len(training_frame)} training and {len(check_frame)} held-out rows")
    # Predictions of the fitted pipeline, which parity just tied to the ONNX graph's on these rows.
    monitoring = measure_reference(training_frame, features, pipeline.predict(check_frame), task, classes)
    monitoring["taps"] = find_taps(model, [feature.name for feature in features if feature.kind == "categorical"])
    importance = None
    if check_labels is not None:
        progress(f"permutation importance on {min(len(check_frame), MAX_IMPORTANCE_ROWS)} held-out rows")
        columns = [feature.column or feature.name for feature in features]
        importance = measure_importance(pipeline, check_frame, check_labels, columns)

    def render(version: int) -> dict[str, bytes]:
        card = cards.build_card(
            name=name,
            version=version,
            model=model,
            task=task,
            description=description,
            features=features,
            classes=classes,
            target=target,
            estimator=_estimator_name(pipeline),
            metrics=metrics or {},
            search=search,
            parity=converted.parity_json(),
            golden_rows=len(golden_index),
            background=background,
            importance=importance,
            monitoring=monitoring,
        )
        cards.add_metadata(model, card)
        model_bytes = model.SerializeToString()
        _recheck_golden(model_bytes, golden_feed, golden_outputs, tolerance)
        files = {
            MODEL_FILE: model_bytes,
            GOLDEN_FILE: cards.dumps(
                cards.build_golden(golden_feed, golden_outputs, card, (tolerance.atol, tolerance.rtol))
            ),
        }
        if background is not None:
            files[BACKGROUND_FILE] = cards.dumps(cards.build_background(background_feed, background, card))
        card["sha256"] = cards.sha256_hex(model_bytes)
        # Every file but the card itself, so a reader can verify all it loads (the card cannot hold its own hash).
        card["digests"] = {file_name: cards.sha256_hex(content) for file_name, content in files.items()}
        return {**files, CARD_FILE: cards.dumps(card)}

    version, path = publish(model_dir, name, render)
    progress(f"published {name} version {version} at {path}")
    card = read_card((path / CARD_FILE).read_bytes())
    return Published(name, version, path, report, card)


def _golden_rows(held_out: int, edges: int) -> np.ndarray[Any, np.dtype[np.intp]]:
    """Up to MAX_GOLDEN_ROWS held-out rows, then every edge row (unseen categories, missing values)."""
    return np.concatenate([np.arange(min(held_out, MAX_GOLDEN_ROWS)), held_out + np.arange(edges)]).astype(np.intp)


def _recheck_golden(model_bytes: bytes, feed: dict[str, Any], outputs: dict[str, Any], tolerance: Tolerance) -> None:
    """The final bytes (metadata added) must still reproduce the golden vectors: a last self-check."""
    import onnxruntime as ort

    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    names = list(outputs)
    report = compare_outputs(outputs, dict(zip(names, session.run(names, feed), strict=True)), tolerance, len(feed), 0)
    if not report.passed:
        raise ParityError(report)


def _estimator_name(pipeline: BaseEstimator) -> str:
    steps = getattr(pipeline, "steps", None)
    return type(steps[-1][1] if steps else pipeline).__name__


def _plain(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
