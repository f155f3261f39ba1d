"""Explanations as a service: a request's parameters and limits, a thread of its own, the JSON answer.

The arithmetic is serve/shapley.py's. Here: which of the model's outputs is explained (the value, or
each class's probability), the limits every explain request is held to (rows, model rows, requests in
flight, the deadline), and the thread explanations run in. One thread at the idle scheduling class, so
that however many explain requests arrive they use only CPU inference leaves; onnxruntime releases the
GIL while it runs.
Front ends (REST today) parse the rows and call `Explainer.explain`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from serve import shapley
from serve.columns import Feed, Inputs, column_array
from serve.errors import (
    DeadlineExceededError,
    ExplanationUnavailableError,
    InFlightLimitError,
    InvalidRequestError,
    PayloadTooLargeError,
    describe,
)
from serve.metrics import Metrics
from serve.model import Model
from serve.settings import Settings

MAX_PERMUTATIONS = 10_000
MAX_WORKSPACES = 8
"""Model versions whose coalition-row buffers are kept (a few MB each; a version swap leaves the old one)."""
CHUNK_ROWS = 65_536
"""Model rows per onnxruntime call: large enough to amortise a call, small enough to bound memory."""


@dataclass(frozen=True)
class ExplainOptions:
    method: shapley.Method
    permutations: int
    seed: int


def parse_options(parameters: Any, model: Model) -> ExplainOptions:
    """{"method": "exact" | "permutation", "permutations": N, "seed": S}, each optional."""
    if parameters is None:
        parameters = {}
    if not isinstance(parameters, dict):
        raise InvalidRequestError(f"'parameters' must be an object, got {describe(parameters)}")
    columns = len(model.inputs)
    method = parameters.get("method", shapley.default_method(columns))
    if method not in ("exact", "permutation"):
        raise InvalidRequestError(f"parameters.method must be 'exact' or 'permutation', got {describe(method)}")
    if method == "exact" and columns > shapley.MAX_EXACT_COLUMNS:
        raise InvalidRequestError(
            f"exact explanations take up to {shapley.MAX_EXACT_COLUMNS} columns; model {model.name!r} has "
            f"{columns}: use parameters.method 'permutation'"
        )
    permutations = parameters.get("permutations", shapley.DEFAULT_PERMUTATIONS)
    if type(permutations) is not int or not 2 <= permutations <= MAX_PERMUTATIONS or permutations % 2:
        raise InvalidRequestError(
            f"parameters.permutations must be an even integer from 2 to {MAX_PERMUTATIONS} (orders come in "
            f"antithetic pairs), got {describe(permutations)}"
        )
    seed = parameters.get("seed", 0)
    if type(seed) is not int or not 0 <= seed < 2**32:
        raise InvalidRequestError(f"parameters.seed must be an integer from 0 to 2^32 - 1, got {describe(seed)}")
    return ExplainOptions(method, permutations, seed)


def explained_outputs(model: Model) -> tuple[str, list[str]]:
    """(output explained, a name per column of it): a classifier's probabilities by class, else the value."""
    if model.task == "classification" and model.classes and len(model.outputs) == 2:
        return model.output_names[1], [str(name) for name in model.classes]
    name = model.output_names[0]
    return name, [model.card["target"] or name]


class Explainer:
    """Runs explanations for every model, one at a time, in a thread of its own, within the limits."""

    def __init__(self, settings: Settings, metrics: Metrics) -> None:
        self.max_rows = settings.max_explain_rows
        self.max_model_rows = settings.max_explain_model_rows
        self.max_in_flight = settings.max_explain_in_flight
        self.timeout_s = settings.request_timeout_s
        self.metrics = metrics
        self.in_flight = 0
        self._workspaces: dict[tuple[str, int, str], shapley.Workspace] = {}
        """Per model version: the coalition-row buffers its explanations reuse (only the explain thread)."""
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="explain", initializer=_yield_to_inference
        )

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)

    async def explain(
        self, model: Model, inputs: Inputs, rows: int, options: ExplainOptions, timeout_s: float | None = None
    ) -> dict[str, Any]:
        """The explanation of `rows` rows of validated `inputs`, as the JSON document the endpoints answer."""
        background = model.background
        if background is None:
            raise ExplanationUnavailableError(
                f"model {model.name!r} version {model.version} has no background data to explain against: "
                "export it again with --background-rows N (N > 0)"
            )
        if rows > self.max_rows:
            raise PayloadTooLargeError(
                f"the request asks to explain {rows} rows; the limit is {self.max_rows} (SERVE_MAX_EXPLAIN_ROWS)"
            )
        background_rows = len(next(iter(background.values())))
        model_rows = rows * shapley.coalitions_per_row(options.method, len(model.inputs), options.permutations)
        model_rows = model_rows * background_rows + rows
        if model_rows > self.max_model_rows:
            raise PayloadTooLargeError(
                f"explaining {rows} row(s) of {model.name!r} by {options.method} costs {model_rows} model rows; "
                f"the limit is {self.max_model_rows} (SERVE_MAX_EXPLAIN_MODEL_ROWS): send fewer rows"
                + (" or fewer permutations" if options.method == "permutation" else "")
            )
        if self.in_flight >= self.max_in_flight:
            self.metrics.rejected.labels("explain_in_flight").inc()
            raise InFlightLimitError(
                f"the server is explaining {self.max_in_flight} requests, its limit (SERVE_MAX_EXPLAIN_IN_FLIGHT); "
                "retry shortly"
            )
        budget = self.timeout_s if timeout_s is None else min(timeout_s, self.timeout_s)
        deadline = time.monotonic() + budget
        _, names = explained_outputs(model)
        feed = _arrays(model, inputs)
        score = scorer(model)
        workspace = self._workspaces.pop(model.identity, None) or shapley.Workspace()
        self._workspaces[model.identity] = workspace  # most recent last: the oldest goes beyond the bound
        while len(self._workspaces) > MAX_WORKSPACES:
            del self._workspaces[next(iter(self._workspaces))]

        def run() -> shapley.Explanation:
            return shapley.explain(score, feed, background, method=options.method, permutations=options.permutations,
                                   seed=options.seed, chunk_rows=CHUNK_ROWS, deadline=deadline,
                                   workspace=workspace)  # fmt: skip

        self.in_flight += 1
        self.metrics.explain_in_flight.inc()
        try:
            explanation = await asyncio.get_running_loop().run_in_executor(self._executor, run)
        except shapley.DeadlineError as exc:
            raise DeadlineExceededError(f"the explanation did not finish within {budget:g} s: {exc}") from None
        finally:
            self.in_flight -= 1
            self.metrics.explain_in_flight.dec()
        self.metrics.explained(model.name, options.method, explanation.rows_evaluated)
        return render(model, names, background_rows, explanation)


def scorer(model: Model) -> shapley.Score:
    """The model as the explainer sees it: a batch in, the explained output as (rows, outputs) out."""
    output, _ = explained_outputs(model)

    def score(batch: Feed) -> npt.NDArray[np.floating[Any]]:
        result: npt.NDArray[np.floating[Any]] = model.session.run([output], batch)[0]
        return result.reshape(len(result), -1)

    return score


def _yield_to_inference() -> None:
    # SCHED_IDLE: the explain thread runs only on CPU nothing else wants, and a waking event loop preempts
    # it at once. Measured on one core under saturating inference: at nice 10 it took its CFS share and
    # infer p99 went 0.8 -> 4.8 ms; at SCHED_IDLE p99 moved 1.0-1.3x. Linux schedules threads by their id,
    # and onnxruntime with one intra-op thread runs a session on the calling thread, so its calls follow.
    with contextlib.suppress(OSError, AttributeError):
        os.sched_setscheduler(threading.get_native_id(), os.SCHED_IDLE, os.sched_param(0))


def _arrays(model: Model, inputs: Inputs) -> Feed:
    dtypes = {name: dtype for name, dtype, _ in model.signature}
    return {spec.name: column_array(inputs[spec.name], dtypes[spec.name]) for spec in model.inputs}


def render(model: Model, outputs: list[str], background_rows: int, explanation: shapley.Explanation) -> dict[str, Any]:
    """Per row: the prediction and each column's value, one number per output (class or target)."""
    columns = model.input_names

    def by_column(table: npt.NDArray[np.float64]) -> list[dict[str, list[float]]]:
        return [dict(zip(columns, row.tolist(), strict=True)) for row in table]

    errors = explanation.standard_errors
    return {
        "model_name": model.name,
        "model_version": model.version_text,
        "method": explanation.method,
        "outputs": outputs,
        "columns": columns,
        "base_values": explanation.base_values.tolist(),
        "prediction": explanation.prediction.tolist(),
        "values": by_column(explanation.values),
        "standard_errors": None if errors is None else by_column(errors),
        "additivity_error": explanation.additivity_error,
        "rows_evaluated": explanation.rows_evaluated,
        "background_rows": background_rows,
        "permutations": explanation.permutations,
        "seconds": explanation.seconds,
    }
