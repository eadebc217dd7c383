"""Which pipeline reads which topic (topic names come from Settings)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import timedelta

from consumers.pipelines.bars import BarsPipeline
from consumers.pipelines.base import Pipeline, TimeRules
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
    times = TimeRules(future=timedelta(seconds=settings.future_tolerance_seconds),
                      skew=timedelta(milliseconds=settings.clock_skew_tolerance_ms))
    return {topic_of(settings, name): PIPELINES[name](times) for name in chosen}
