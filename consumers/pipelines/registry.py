"""Which pipeline reads which topic (topic names come from Settings)."""

from __future__ import annotations

from collections.abc import Iterable

from consumers.pipelines.bars import BarsPipeline
from consumers.pipelines.base import Pipeline
from consumers.pipelines.fills import FillsPipeline
from consumers.pipelines.improvements import ImprovementsPipeline
from consumers.pipelines.predictions import PredictionsPipeline
from consumers.settings import Settings

PIPELINES: dict[str, type[Pipeline]] = {
    "fills": FillsPipeline,
    "predictions": PredictionsPipeline,
    "bars": BarsPipeline,
    "improvements": ImprovementsPipeline,
}


def topic_of(settings: Settings, name: str) -> str:
    return {
        "fills": settings.topic_fills,
        "predictions": settings.topic_predictions,
        "bars": settings.topic_bars,
        "improvements": settings.topic_improvements,
    }[name]


def build(settings: Settings, names: Iterable[str] | None = None) -> dict[str, Pipeline]:
    """``{topic: pipeline}`` for the named pipelines (default: all of them)."""
    chosen = list(PIPELINES) if names is None else list(names)
    unknown = set(chosen) - set(PIPELINES)
    if unknown:
        raise ValueError(f"unknown pipelines {sorted(unknown)}; choose from {sorted(PIPELINES)}")
    return {topic_of(settings, name): PIPELINES[name]() for name in chosen}
