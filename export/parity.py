"""The parity gate: scikit-learn and ONNX Runtime must agree on held-out rows and edge rows.

A value passes when |onnx - sklearn| <= atol + rtol * |sklearn| (numpy.isclose's rule); labels must
match exactly unless a mismatch budget is given. The report names the worst row of every output.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.base import BaseEstimator

from contract import GOLDEN_ATOL, GOLDEN_RTOL
from export.features import MISSING_STRING, Feature

UNSEEN_CATEGORY = "__tabserve_unseen__"


@dataclass(frozen=True)
class Tolerance:
    """How far ONNX Runtime may stray from scikit-learn before a model is refused."""

    atol: float = GOLDEN_ATOL
    rtol: float = GOLDEN_RTOL
    max_label_mismatches: int = 0


@dataclass(frozen=True)
class OutputParity:
    """One output's worst disagreement."""

    name: str
    max_abs_error: float
    max_rel_error: float
    worst_row: int
    failing_rows: int


@dataclass(frozen=True)
class ParityReport:
    """What the gate measured; `problems` is empty when the model may be published."""

    rows: int
    edge_rows: int
    outputs: tuple[OutputParity, ...]
    label_mismatches: int | None
    tolerance: Tolerance
    problems: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "edge_rows": self.edge_rows,
            "outputs": {item.name: asdict(item) for item in self.outputs},
            "label_mismatches": self.label_mismatches,
            "tolerance": asdict(self.tolerance),
            "passed": self.passed,
        }


class ParityError(Exception):
    """ONNX Runtime disagrees with scikit-learn beyond the tolerance."""

    def __init__(self, report: ParityReport, detail: str = "") -> None:
        super().__init__("parity check failed: " + "; ".join((*report.problems, detail) if detail else report.problems))
        self.report = report


def accepts_missing(pipeline: BaseEstimator, frame: pd.DataFrame, features: list[str]) -> dict[str, bool]:
    """Whether scikit-learn scores a row with this column missing (it does when an imputer covers it)."""
    result = {}
    for name in features:
        row = frame.iloc[:1].copy()
        row[name] = np.nan if row[name].dtype.kind == "f" else MISSING_STRING
        try:
            output = np.asarray(pipeline.predict(row))
            result[name] = output.dtype.kind not in "fc" or bool(np.all(np.isfinite(output)))
        except ValueError:
            result[name] = False
    return result


def edge_rows(frame: pd.DataFrame, features: list[Feature]) -> pd.DataFrame:
    """Rows at each numeric column's min and max, with unseen categories, and with missing values."""
    base = frame.iloc[[0]].reset_index(drop=True)
    rows = []
    for column, feature in zip(frame.columns, features, strict=True):
        values: list[Any]
        if feature.kind == "numeric":
            values = [feature.minimum, feature.maximum]
        else:
            values = [UNSEEN_CATEGORY, *feature.categories[:1]]
        if feature.accepts_missing:
            values.append(np.nan if feature.kind == "numeric" else MISSING_STRING)
        for value in values:
            if value is None:
                continue
            row = base.copy()
            row[column] = np.float32(value) if feature.kind == "numeric" else value
            rows.append(row)
    return pd.concat(rows, ignore_index=True).astype(frame.dtypes.to_dict()) if rows else base.iloc[:0]


def sklearn_outputs(
    pipeline: BaseEstimator, frame: pd.DataFrame, output_names: list[str]
) -> dict[str, npt.NDArray[Any]]:
    """scikit-learn's answers laid out like the ONNX outputs (label + probabilities, or variable [N, 1])."""
    if hasattr(pipeline, "predict_proba"):
        label_name, probability_name = output_names
        return {
            label_name: np.asarray(pipeline.predict(frame)),
            probability_name: np.asarray(pipeline.predict_proba(frame), dtype=np.float32),
        }
    (value_name,) = output_names
    prediction = np.asarray(pipeline.predict(frame), dtype=np.float32)
    return {value_name: prediction.reshape(len(frame), -1)}


def onnx_feed(frame: pd.DataFrame, input_names: list[str]) -> dict[str, npt.NDArray[Any]]:
    """The ONNX feed for a prepared frame: one [N, 1] array per column, in the model's input order."""
    feed: dict[str, npt.NDArray[Any]] = {}
    for column_name, name in zip(frame.columns, input_names, strict=True):
        column = frame[column_name]
        dtype: Any = np.float32 if column.dtype.kind == "f" else object
        feed[name] = column.to_numpy(dtype=dtype).reshape(-1, 1)
    return feed


def compare_outputs(
    expected: dict[str, npt.NDArray[Any]],
    actual: dict[str, npt.NDArray[Any]],
    tolerance: Tolerance,
    rows: int,
    edges: int,
) -> ParityReport:
    """Compare output by output; numeric outputs by tolerance, label outputs exactly."""
    outputs, problems = [], []
    label_mismatches: int | None = None
    for name, want in expected.items():
        got = np.asarray(actual[name])
        if want.dtype.kind in "fc":
            want64 = want.astype(np.float64).reshape(len(want), -1)
            got64 = got.astype(np.float64).reshape(len(got), -1)
            error = np.abs(got64 - want64)
            # Relative to max(|sklearn|, atol): a probability of 1e-30 off by 1e-7 is not a 1e23 relative error.
            relative = error / np.maximum(np.abs(want64), tolerance.atol)
            bad = ~np.isclose(got64, want64, rtol=tolerance.rtol, atol=tolerance.atol, equal_nan=True)
            per_row = np.nanmax(error, axis=1) if error.size else np.zeros(len(want))
            worst = int(np.nanargmax(per_row)) if per_row.size and not np.all(np.isnan(per_row)) else 0
            failing = int(np.any(bad, axis=1).sum())
            item = OutputParity(
                name, float(np.nanmax(error, initial=0.0)), float(np.nanmax(relative, initial=0.0)), worst, failing
            )
            outputs.append(item)
            if failing:
                problems.append(
                    f"output {name!r}: {failing} of {len(want)} rows beyond"
                    f" atol={tolerance.atol:g}, rtol={tolerance.rtol:g};"
                    f" worst row {worst} differs by {item.max_abs_error:.3g} (sklearn {want64[worst].tolist()},"
                    f" onnxruntime {got64[worst].tolist()})"
                )
        else:
            mismatched = np.flatnonzero(want.astype(str).ravel() != got.astype(str).ravel())
            label_mismatches = int(mismatched.size)
            worst = int(mismatched[0]) if mismatched.size else 0
            outputs.append(OutputParity(name, 0.0, 0.0, worst, label_mismatches))
            if label_mismatches > tolerance.max_label_mismatches:
                problems.append(
                    f"output {name!r}: {label_mismatches} label mismatches (allowed {tolerance.max_label_mismatches});"
                    f" first at row {worst}: sklearn {want.ravel()[worst]!r}, onnxruntime {got.ravel()[worst]!r}"
                )
    return ParityReport(rows, edges, tuple(outputs), label_mismatches, tolerance, tuple(problems))


def check_parity(
    pipeline: BaseEstimator,
    model_bytes: bytes,
    frame: pd.DataFrame,
    tolerance: Tolerance,
    edges: int = 0,
) -> tuple[ParityReport, dict[str, npt.NDArray[Any]]]:
    """Run both sides on `frame`; return the report and scikit-learn's outputs (the golden answers)."""
    import onnxruntime as ort

    from export.convert import UnconvertibleStepError

    try:
        session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
        names = [output.name for output in session.get_outputs()]
        inputs = [item.name for item in session.get_inputs()]
        ran = session.run(names, onnx_feed(frame, inputs))
    except Exception as exc:  # onnxruntime's own Fail/InvalidArgument/...: what skl2onnx wrote does not run
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise UnconvertibleStepError(
            f"skl2onnx converted the pipeline, but onnxruntime cannot run the graph ({first_line}); a step "
            "skl2onnx handles only in part (an imputer's add_indicator on strings, for one) is the usual cause"
        ) from exc
    expected = sklearn_outputs(pipeline, frame, names)
    actual = dict(zip(names, ran, strict=True))
    return compare_outputs(expected, actual, tolerance, len(frame), edges), expected
