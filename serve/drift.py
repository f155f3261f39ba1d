"""Input-quality figures as Prometheus metrics and as the /quality document, from every worker at once.

Counts are prometheus-client counters, incremented by what each flush of a QualityMonitor (serve/quality.py)
counted; each worker's window is a gauge per bin (multiprocess mode "livesum": a scrape adds the live
workers' windows). The PSI is not a stored metric: it is computed when read, from the summed windows and
the card's reference, so with several workers it is the PSI of all of their recent rows together. Each
worker keeps window_rows / workers rows, so the summed window holds about SERVE_QUALITY_WINDOW_ROWS.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from prometheus_client import Counter, Gauge
from prometheus_client.metrics_core import GaugeMetricFamily, Metric

from serve.psi import MIN_PSI_ROWS, THRESHOLDS, status_of, window_psi
from serve.quality import QualityMonitor
from serve.watched import Tally

LABELS = ("model", "version", "feature")
FEATURE_COUNTERS = {
    "values": ("tabserve_feature_values", "Values received per input feature (every row, cached answers too)."),
    "missing": ("tabserve_feature_missing", "Missing values received per input feature."),
    "unseen": ("tabserve_feature_unseen_category", "Values of a categorical feature the model never saw."),
}
OUT_OF_RANGE = ("tabserve_feature_out_of_range", "Numbers outside the training range, by side.")
BINS = ("tabserve_feature_bin", "Values per training bin (numbers) or category (categorical features).")
WINDOW = ("tabserve_feature_window_rows", "Rows per bin in this worker's recent window (the PSI's input).")
PREDICTION_BINS = ("tabserve_prediction_bin", "Served predictions per class or training bin.")
PREDICTION_WINDOW = ("tabserve_prediction_window_rows", "Predictions per bin in this worker's recent window.")
FEATURE_PSI = ("tabserve_feature_psi", "Population stability index of the recent window against training.")
PREDICTION_PSI = ("tabserve_prediction_psi", "Population stability index of recent predictions against held-out ones.")


class DriftMetrics:
    """The metric objects, one set per server; a QualityExport per model version binds its children."""

    def __init__(self, registry: Any) -> None:
        self.counters = {
            key: Counter(name, text, LABELS, registry=registry) for key, (name, text) in FEATURE_COUNTERS.items()
        }
        self.out_of_range = Counter(*OUT_OF_RANGE, (*LABELS, "side"), registry=registry)
        self.bins = Counter(*BINS, (*LABELS, "bin"), registry=registry)
        self.window = Gauge(*WINDOW, (*LABELS, "bin"), registry=registry, multiprocess_mode="livesum")
        self.prediction_bins = Counter(*PREDICTION_BINS, ("model", "version", "bin"), registry=registry)
        self.prediction_window = Gauge(*PREDICTION_WINDOW, ("model", "version", "bin"), registry=registry,
                                       multiprocess_mode="livesum")  # fmt: skip


@dataclass
class _Published:
    """One tally's metric children, bound once (prometheus-client's `labels()` was ~40 % of a publish), and
    what was last exported through them."""

    counters: dict[str, Any]
    """Scalar counter key (an attribute of the tally) -> its child."""
    bins: list[Any]
    window: list[Any]
    counted: dict[str, int] = field(default_factory=dict)
    binned: Any = None
    windowed: Any = None
    """The window's counts as last set on the gauges; None before the first publish, which sets them all."""


class QualityExport:
    """Publishes one model version's flushes: counter increments and the window gauges."""

    def __init__(self, metrics: DriftMetrics, name: str, version: int, monitor: QualityMonitor) -> None:
        self.monitor = monitor
        labels = (name, str(version))
        self._published: list[tuple[Tally, _Published]] = []
        for tally in monitor.inputs:
            own = (*labels, tally.name)
            counters = {key: counter.labels(*own) for key, counter in metrics.counters.items()}
            counters.update({side: metrics.out_of_range.labels(*own, side) for side in ("low", "high")})
            self._published.append((tally, _bound(tally, counters, metrics.bins, metrics.window, own)))
        if monitor.prediction is not None:
            prediction = _bound(monitor.prediction, {}, metrics.prediction_bins, metrics.prediction_window, labels)
            self._published.append((monitor.prediction, prediction))

    def publish(self) -> None:
        """Called by the monitor's `publish`, under its lock: the counts since the last call, and the windows.

        A column that counted nothing new is skipped, and only counters and window gauges that moved are
        touched: with workers every loaded version publishes each second, and setting each bin's gauge every
        time cost ~1 % of a busy server's CPU (profiled: the four example models loaded, one of them busy)."""
        for tally, seen in self._published:
            values = tally.values  # the tally derives its figures when read: each is read once here
            if values == seen.counted.get("values") and seen.windowed is not None:
                continue
            counted = {"values": values}  # a prediction has no counters, but its values still say what moved
            counted.update({key: getattr(tally, key) for key in seen.counters if key != "values"})
            for key, child in seen.counters.items():
                delta = counted[key] - seen.counted.get(key, 0)
                if delta:
                    child.inc(delta)
            # Bins are compared in numpy and only the moved ones touched: a numpy scalar per bin cost more.
            bins = tally.bins
            moved = bins - (0 if seen.binned is None else seen.binned)
            for index in np.flatnonzero(moved).tolist():
                seen.bins[index].inc(int(moved[index]))
            window = tally.window()
            changed = range(len(window)) if seen.windowed is None else np.flatnonzero(window != seen.windowed).tolist()
            for index in changed:
                seen.window[index].set(int(window[index]))
            seen.counted, seen.binned, seen.windowed = counted, bins, window


def _bound(tally: Tally, counters: dict[str, Any], bins: Counter, window: Gauge, labels: tuple[str, ...]) -> _Published:
    return _Published(counters, [bins.labels(*labels, label) for label in tally.labels],
                      [window.labels(*labels, label) for label in tally.labels])  # fmt: skip


class PsiCollector:
    """tabserve_feature_psi and tabserve_prediction_psi, computed at scrape from the summed windows."""

    def __init__(self, windows: Any, monitors: Any) -> None:
        self.windows = windows
        """A callable giving the collected window families (this process's gauges, or every worker's files)."""
        self.monitors = monitors
        """A callable giving {(model, version): QualityMonitor} for the versions loaded here."""

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        features = GaugeMetricFamily(*FEATURE_PSI, labels=LABELS)
        predictions = GaugeMetricFamily(*PREDICTION_PSI, labels=("model", "version"))
        windows = summed_windows(self.windows())
        for (model, version), monitor in self.monitors().items():
            for tally in monitor.inputs:
                value = window_psi(_counts(windows, (model, version, tally.name), tally), tally.expected)
                if value is not None:
                    features.add_metric([model, version, tally.name], value)
            if monitor.prediction is not None:
                window = _counts(windows, (model, version, "prediction"), monitor.prediction)
                value = window_psi(window, monitor.prediction.expected)
                if value is not None:
                    predictions.add_metric([model, version], value)
        yield features
        yield predictions


def summed_windows(families: Iterable[Metric]) -> dict[tuple[str, str, str], dict[str, float]]:
    """(model, version, feature or "prediction") -> bin label -> rows, from the window gauges' samples."""
    windows: dict[tuple[str, str, str], dict[str, float]] = {}
    for family in families:
        if family.name not in (WINDOW[0], PREDICTION_WINDOW[0]):
            continue
        for sample in family.samples:
            labels = sample.labels
            key = (labels["model"], labels["version"], labels.get("feature", "prediction"))
            bins = windows.setdefault(key, {})
            bins[labels["bin"]] = bins.get(labels["bin"], 0.0) + sample.value
    return windows


def _counts(windows: dict[tuple[str, str, str], dict[str, float]], key: tuple[str, str, str], tally: Tally) -> Any:
    bins = windows.get(key, {})
    return np.array([bins.get(label, 0.0) for label in tally.labels], dtype=np.float64)


def report(
    monitor: QualityMonitor, name: str, version: int, families: list[Metric], window_rows: int
) -> dict[str, Any]:
    """GET .../quality: per feature and for the prediction, the counts, the window and its PSI and status,
    with the card's reference beside them; every worker's rows when there are several."""
    labels = (name, str(version))
    totals: dict[tuple[str, ...], float] = {}
    for family in families:
        for sample in family.samples:
            if sample.name.endswith("_total") and sample.labels.get("model") == name:
                key = (sample.name, sample.labels.get("feature", ""), sample.labels.get("side", ""),
                       sample.labels.get("bin", ""))  # fmt: skip
                if sample.labels.get("version") == labels[1]:
                    totals[key] = totals.get(key, 0.0) + sample.value
    windows = summed_windows(families)

    def total(metric: str, feature: str, side: str = "", bin: str = "") -> int:
        return int(totals.get((metric + "_total", feature, side, bin), 0.0))

    def figures(tally: Tally, key: str, counter: str) -> dict[str, Any]:
        window = _counts(windows, (*labels, key), tally)
        value = window_psi(window, tally.expected)
        reason = None if value is not None else (
            "no training reference in the model card" if tally.expected is None
            else f"{int(window.sum())} rows in the window; a PSI needs {MIN_PSI_ROWS}"
        )  # fmt: skip
        return {
            "status": status_of(value),
            "psi": value,
            **({"reason": reason} if reason else {}),
            "bins": tally.labels,
            "counts": [total(counter, key if counter == BINS[0] else "", "", label) for label in tally.labels],
            "window": window.astype(int).tolist(),
            "reference": None if tally.expected is None else tally.expected.tolist(),
        }

    features = []
    for tally in monitor.inputs:
        entry: dict[str, Any] = {"name": tally.name, "kind": tally.kind}
        entry["values"] = total(FEATURE_COUNTERS["values"][0], tally.name)
        entry["missing"] = total(FEATURE_COUNTERS["missing"][0], tally.name)
        if tally.kind == "categorical":
            entry["unseen_category"] = total(FEATURE_COUNTERS["unseen"][0], tally.name)
            entry["categories"] = list(tally.categories)
        else:
            entry["out_of_range"] = {side: total(OUT_OF_RANGE[0], tally.name, side) for side in ("low", "high")}
            entry["training_range"] = [tally.minimum, tally.maximum]
        entry.update(figures(tally, tally.name, BINS[0]))
        features.append(entry)
    document: dict[str, Any] = {
        "model_name": name,
        "model_version": str(version),
        "window_rows": window_rows,
        "thresholds": {status: threshold for threshold, status in THRESHOLDS},
        "features": features,
    }
    if monitor.prediction is not None:
        document["prediction"] = figures(monitor.prediction, "prediction", PREDICTION_BINS[0])
    return document
