"""What the app's lifespan creates and every front end reads: readiness and the shared resources."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TypedDict

from serve.explanations import Explainer
from serve.fleet import Fleet
from serve.metrics import Metrics
from serve.repository import ModelRepository
from serve.scoring import Scorer
from serve.settings import Settings


@dataclass
class Lifecycle:
    """Readiness: true after every model is loaded and warmed up, false again once shutdown begins."""

    ready: bool = False


class AppState(TypedDict):
    settings: Settings
    repository: ModelRepository
    lifecycle: Lifecycle
    metrics: Metrics
    scorer: Scorer
    explainer: Explainer
    fleet: Fleet | None
    """With several workers: load and unload reach every one (serve/fleet.py)."""
