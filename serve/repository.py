"""The live model repository: every valid version under model_dir, each with its own micro-batcher."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path

from serve.batching import MicroBatcher
from serve.columns import Feed
from serve.drift import QualityExport
from serve.errors import ModelNotFoundError
from serve.metrics import Metrics, ModelMetrics
from serve.model import Model, ModelLoadError, SessionOptions
from serve.quality import QualityMonitor
from serve.reports import BatchRecord
from serve.settings import Settings
from serve.statistics import ModelStatistics

logger = logging.getLogger("tabserve.repository")


@dataclass(frozen=True)
class ModelEntry:
    model: Model
    batcher: MicroBatcher
    metrics: ModelMetrics
    statistics: ModelStatistics
    quality: QualityMonitor | None
    """What callers send, counted against the card's reference; None when monitoring is off."""


def scan(model_dir: Path) -> Iterator[tuple[str, int, Path]]:
    """(name, version, folder) for every <name>/<integer>/ folder; staging folders are skipped."""
    if not model_dir.is_dir():
        return
    for folder in sorted(model_dir.iterdir()):
        if folder.is_dir() and not folder.name.startswith("."):
            for child in sorted(folder.iterdir(), key=lambda path: path.name):
                if child.is_dir() and child.name.isdigit():
                    yield folder.name, int(child.name), child


def _stamp(folder: Path) -> tuple[float, ...]:
    return tuple(path.stat().st_mtime for path in sorted(folder.iterdir()) if path.is_file())


def load_model(name: str, version: int, folder: Path, settings: Settings) -> Model:
    """Load, verify (sha256, golden vectors) and warm up one version; ModelLoadError if it must not serve."""
    options = SessionOptions(settings.ort_intra_op_threads, settings.ort_inter_op_threads, settings.ort_allow_spinning)
    model = Model(name, version, folder, options)
    for rows in sorted({1, settings.max_batch_size}):
        model.warm_up(rows)
    return model


TAPPED_ROWS = 32
"""A batch of this many rows or more reads the model's taps (serve/taps.py). Their extra outputs cost
onnxruntime 5-9 us a batch and save ~0.3 us a row of counting, so a smaller batch is counted by value:
with the taps on every batch, one-row requests at one connection ran 3 % slower (measured side by side)."""


def _monitored(model: Model, quality: QualityMonitor) -> Callable[[Feed], Feed]:
    """The model's run, telling the monitor of every batch it scores (its first output is the prediction:
    the label, or the value)."""
    watched, first = model.output_names[0], model.input_names[0]

    def run(feed: Feed) -> Feed:
        if model.taps and len(feed[first]) >= TAPPED_ROWS:
            outputs, tapped = model.run_tapped(feed)
        else:
            outputs = tapped = model.score(feed)
        quality.record(feed, tapped, len(outputs[watched]))
        return outputs

    return run


class ModelRepository:
    """Name -> version -> entry. Owns the batchers: closing the repository drains them."""

    def __init__(self, settings: Settings, executor: Executor | None, metrics: Metrics) -> None:
        self._settings = settings
        self._executor = executor
        self.metrics = metrics
        self._models: dict[str, dict[int, ModelEntry]] = {}
        self.failures: dict[tuple[str, int], str] = {}
        self._tried: dict[tuple[str, int], tuple[float, ...]] = {}
        """Files' mtimes when a version was last tried: a refused version is retried only once it changes."""
        self._unloaded: set[str] = set()
        self._lock = asyncio.Lock()

    async def add(self, model: Model) -> ModelEntry:
        settings = self._settings
        model_metrics = self.metrics.for_model(model.name, model.version)
        self.metrics.model_load_seconds.labels(model.name, str(model.version)).set(model.load_seconds)
        statistics = ModelStatistics()

        def observe(batch: BatchRecord) -> None:
            statistics.record(batch)
            model_metrics.batch(batch)

        quality: QualityMonitor | None = None
        run: Callable[[Feed], Feed] = model.score
        if settings.quality_monitoring:
            # Each worker keeps its share of the window: a scrape adds the workers' windows (serve/drift.py).
            window = max(1, settings.quality_window_rows // settings.workers)
            quality = QualityMonitor(model.card, model.input_names, model.output_names[0], window)
            quality.read_off(model.taps, model.scores)
            if quality.taps:
                logger.info("%s version %d: monitoring counts %s off the model's taps in batches of %d rows or more",
                            model.name, model.version, ", ".join(quality.taps), TAPPED_ROWS)  # fmt: skip
            quality.on_publish = QualityExport(self.metrics.drift, model.name, model.version, quality).publish
            run = _monitored(model, quality)

        batcher = MicroBatcher(
            run,
            max_batch_size=settings.max_batch_size,
            max_batch_delay_ms=settings.max_batch_delay_ms,
            adaptive_wait_ms=settings.adaptive_batch_wait_ms,
            max_queue_size=settings.max_queue_size,
            inline_batch_rows=settings.inline_batch_rows,
            executor=self._executor,
            name=f"{model.name}/{model.version}",
            on_batch=observe,
        )
        await batcher.__aenter__()
        entry = ModelEntry(model, batcher, model_metrics, statistics, quality)
        self._models.setdefault(model.name, {})[model.version] = entry
        self.failures.pop((model.name, model.version), None)
        return entry

    async def refresh(self, only: str | None = None) -> list[str]:
        """Load versions that appeared (or changed after a refusal); return the refusals' messages.

        Loading, verification and warm-up run in a thread; a version takes traffic only once added,
        and nothing already serving is touched, so a swap under load fails no request.
        """
        refusals = []
        loop = asyncio.get_running_loop()
        async with self._lock:
            if only is not None:
                self._unloaded.discard(only)
            found = set()
            for name, version, folder in scan(self._settings.model_dir):
                found.add((name, version))
                if (
                    (only is not None and name != only)
                    or name in self._unloaded
                    or version in self._models.get(name, {})
                ):
                    continue
                stamp = _stamp(folder)
                if only is None and self._tried.get((name, version)) == stamp:
                    continue
                self._tried[(name, version)] = stamp
                try:
                    model = await loop.run_in_executor(None, load_model, name, version, folder, self._settings)
                except ModelLoadError as exc:
                    refusals.append(self._refuse(name, version, exc))
                    continue
                await self.add(model)
                logger.info("loaded %s version %d (%.3f s to load, verify and warm)", name, version, model.load_seconds)
            # A refused version whose folder is gone leaves the index: the refusal described files that no
            # longer exist. (A serving version stays: nothing serving is touched by a scan.)
            for key in [key for key in self.failures if key not in found and (only is None or key[0] == only)]:
                del self.failures[key]
                self._tried.pop(key, None)
        return refusals

    async def unload(self, name: str) -> None:
        """Stop serving every version of `name`: new requests get 404, queued ones still finish."""
        async with self._lock:
            versions = self._models.pop(name, None)
            if versions is None:
                raise ModelNotFoundError(f"unknown model {name!r}; available: {sorted(self._models)}")
            self._unloaded.add(name)
        for entry in versions.values():
            await entry.batcher.close()
            if entry.quality is not None:  # its last rows, which no later read would reach
                entry.quality.publish()
        logger.info("unloaded %s versions %s", name, sorted(versions))

    async def poll(self, interval_s: float) -> None:
        """Pick up newly exported versions every `interval_s` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval_s)
            try:
                await self.refresh()
            except Exception:  # a scan error (a folder vanishing mid-scan) must not stop future scans
                logger.exception("scanning %s failed", self._settings.model_dir)

    def _refuse(self, name: str, version: int, exc: ModelLoadError) -> str:
        logger.error("refusing %s version %d: %s", name, version, exc)
        self.failures[(name, version)] = str(exc)
        return f"{name} version {version}: {exc}"

    async def close(self) -> None:
        for versions in self._models.values():
            for entry in versions.values():
                await entry.batcher.close()

    def get(self, name: str, version: str | None = None) -> ModelEntry:
        """The named version, or the latest one; 404 naming what exists otherwise."""
        versions = self._models.get(name)
        if not versions:
            if name in self._unloaded:
                raise ModelNotFoundError(
                    f"model {name!r} is unloaded (the repository API's load serves it again); "
                    f"available: {sorted(self._models)}"
                )
            raise ModelNotFoundError(f"unknown model {name!r}; available: {sorted(self._models)}")
        if version is None:
            return versions[max(versions)]
        if not version.isdigit() or int(version) not in versions:
            raise ModelNotFoundError(f"model {name!r} has no version {version!r}; available: {sorted(versions)}")
        return versions[int(version)]

    def versions(self, name: str) -> list[int]:
        return sorted(self._models.get(name, {}))

    def monitors(self) -> dict[tuple[str, str], QualityMonitor]:
        """(model, version) -> monitor, for the metrics' PSI."""
        return {(entry.model.name, entry.model.version_text): entry.quality
                for entry in self.entries() if entry.quality is not None}  # fmt: skip

    def publish_quality(self) -> None:
        """Count every version's pending batches and export them: before a read, and each second with workers."""
        for monitor in self.monitors().values():
            monitor.publish()

    def entries(self) -> Iterator[ModelEntry]:
        for versions in self._models.values():
            yield from versions.values()

    def __len__(self) -> int:
        return sum(len(versions) for versions in self._models.values())
