"""Every benchmark target in one table, and the judge that holds a run's figures to them.

A target is met, missed within the noise, or missed. The noise is the run's own A/A control for the
figure (the bare endpoint against a second bare endpoint, tabserve against its twin, monitoring on
against a second server with it on): how far from 1 (or from 0 for a difference) two identical systems
landed in that cell, in the worst repetition. A miss by more than that is a miss of the system, not of
the machine's mood, and makes the benchmark exit non-zero; a miss within it is reported as such, never
as met. No timing happens here: figures come in, verdicts go out (tests/test_loadtest.py feeds it
synthetic ones).
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

Direction = Literal[">=", "<="]
Scale = Literal["ratio", "ms"]
"""How the noise widens a bound: a ratio's noise is a share of it (x (1 - noise)), a difference's is added."""


@dataclass(frozen=True)
class Target:
    key: str
    """The figure it judges, as the benchmark that measures it names it."""
    bound: float
    direction: Direction
    scale: Scale
    control: str
    """Which A/A pair gives the noise (or "none")."""
    bench: str
    """The command that measures it: python -m loadtest <bench>."""
    source: str
    """Why this number: the issue or the benchmark's goal."""


TARGETS: tuple[Target, ...] = (
    Target("1-row json, 64 conn: tabserve / bare req/s", 0.9, ">=", "ratio", "bare / bare twin", "bench", "issue 21"),
    Target("1-row json, 8 conn: tabserve / bare req/s", 0.85, ">=", "ratio", "bare / bare twin", "bench", "issue 21"),
    Target("1-row json, 1 conn: tabserve / bare req/s", 0.7, ">=", "ratio", "bare / bare twin", "bench", "issue 21"),
    Target("1-row json, 1 conn: p50 tabserve - bare, ms", 0.08, "<=", "ms", "bare - bare twin", "bench", "issue 21"),
    Target(
        "1-row json, 64 conn: tabserve / flask req/s",
        50.0,
        ">=",
        "ratio",
        "bare / bare twin",
        "bench",
        "the seed article's approach, x50",
    ),  # fmt: skip
    Target(
        "100-row binary, 64 conn: rows/s / in-process onnxruntime",
        0.5,
        ">=",
        "ratio",
        "tabserve / twin",
        "bench",
        "issue 21: no regression",
    ),  # fmt: skip
    *(
        Target(
            f"100-row {kind}, {load} conn: batching / no batching, side by side",
            1.0,
            ">=",
            "ratio",
            "tabserve / twin",
            "bench",
            "issue 21: no regression",
        )  # fmt: skip
        for kind in ("json", "binary")
        for load in (1, 8, 64)
    ),
    Target(
        "generator: locust 2 processes / 1 process against bare",
        1.3,
        ">=",
        "ratio",
        "bare / bare twin",
        "bench",
        "issue 21",
    ),  # fmt: skip
    *(
        Target(
            f"monitoring, {rows} json, 64 conn: on / off per CPU-s",
            0.97,
            ">=",
            "ratio",
            "on / on twin",
            "quality-bench",
            "issue 19: cost <= 3 %",
        )  # fmt: skip
        for rows in ("1-row", "100-row")
    ),
    Target(
        "2 workers / 1 worker: requests per server CPU-s", 0.95, ">=", "ratio", "tabserve / twin", "bench", "issue 21"
    ),  # fmt: skip
)
"""Explanations have their own goal (explanation rows/s >= 0.8x onnxruntime's), which depends on the model:
EXPLAIN_GOAL, judged per example by python -m loadtest explain-bench."""
EXPLAIN_GOAL = 0.8


@dataclass(frozen=True)
class Figure:
    value: float
    """The run's figure: the median over repetitions."""
    each: tuple[float, ...] = ()
    """Each repetition's."""
    noise: float = 0.0
    """The A/A control's worst distance from identity in the same cell (share for ratios, ms for differences)."""


@dataclass(frozen=True)
class Judgement:
    target: Target
    figure: Figure | None
    verdict: Literal["met", "missed within noise", "MISSED", "not measured"]


def ratio_figure(each: Sequence[float], control: Sequence[float]) -> Figure:
    """A ratio per repetition, and the A/A ratios of the same cell (identity: 1)."""
    noise = max((abs(1 - value) for value in control), default=0.0)
    return Figure(statistics.median(each), tuple(each), noise)


def difference_figure(each: Sequence[float], control: Sequence[float]) -> Figure:
    """A difference per repetition, and the A/A differences of the same cell (identity: 0)."""
    noise = max((abs(value) for value in control), default=0.0)
    return Figure(statistics.median(each), tuple(each), noise)


def judge_one(target: Target, figure: Figure | None) -> Judgement:
    if figure is None:
        return Judgement(target, None, "not measured")
    sign = 1.0 if target.direction == ">=" else -1.0
    if sign * (figure.value - target.bound) >= 0:
        return Judgement(target, figure, "met")
    widened = (
        target.bound * (1 - sign * figure.noise) if target.scale == "ratio" else target.bound - sign * figure.noise
    )
    within = sign * (figure.value - widened) >= 0
    return Judgement(target, figure, "missed within noise" if within else "MISSED")


def judge(figures: dict[str, Figure], bench: str) -> list[Judgement]:
    """Every target of `bench`, each against its figure if the run measured it."""
    return [judge_one(target, figures.get(target.key)) for target in TARGETS if target.bench == bench]


def failed(judgements: Iterable[Judgement]) -> list[Judgement]:
    """What makes the benchmark exit non-zero: a miss by more than the A/A noise."""
    return [judgement for judgement in judgements if judgement.verdict == "MISSED"]


def table(judgements: Iterable[Judgement]) -> str:
    """The verdicts as markdown: target, figure, each repetition, the noise, verdict."""
    lines = ["| target | source | measured | each repetition | A/A noise | verdict |", "|---|---|---|---|---|---|"]
    for judgement in judgements:
        target, figure = judgement.target, judgement.figure
        wanted = f"{target.key} {target.direction} {target.bound:g}"
        if figure is None:
            lines.append(f"| {wanted} | {target.source} | | | | {judgement.verdict} |")
            continue
        noise = f"{figure.noise:.1%}" if target.scale == "ratio" else f"{figure.noise:.3f} ms"
        each = " ".join(f"{value:.3f}" for value in figure.each)
        lines.append(f"| {wanted} | {target.source} | {figure.value:.3f} | {each} | {noise} ({target.control}) | "
                     f"{judgement.verdict} |")  # fmt: skip
    return "\n".join(lines) + "\n"


def as_json(judgement: Judgement) -> dict[str, object]:
    """A judgement as bench.json keeps it."""
    target, figure = judgement.target, judgement.figure
    return {
        "target": target.key,
        "direction": target.direction,
        "bound": target.bound,
        "source": target.source,
        "value": None if figure is None else figure.value,
        "each": [] if figure is None else list(figure.each),
        "noise": None if figure is None else figure.noise,
        "control": target.control,
        "verdict": judgement.verdict,
    }
