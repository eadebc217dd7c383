"""Every topic, described once: its Kafka name (default and setting), its contract, how
producers key it, the pipeline that writes it, and its dead-letter topic. ``TOPICS`` are the
topics this project consumes; ``PUBLISHED`` those it produces for others (no pipeline, no
dead letters: we write them, so they hold only valid messages).

The consumer, the producer, `cie topics`, `cie contracts`, the demo, the settings and the
manifest tests all read this table. Adding a topic = a contract module in
``consumers/contracts/``, a pipeline module in ``consumers/ingest/pipelines/``, its SQL in
``schema/queries/ingest.sql`` (and a migration for its table), and one entry here.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from consumers.contracts.free_form import FreeFormLimits
from consumers.contracts.improvements import Event, ImprovementEvent
from consumers.contracts.predictions import Prediction
from consumers.contracts.tasks import OptimizationTask
from consumers.errors import SettingsError
from consumers.ingest.pipelines.bars import BarsPipeline
from consumers.ingest.pipelines.base import EventTimeSettings, Pipeline
from consumers.ingest.pipelines.fills import FillsPipeline
from consumers.ingest.pipelines.improvements import ImprovementsPipeline
from consumers.ingest.pipelines.predictions import PredictionsPipeline
from consumers.platform.settings import TOPIC_VARIABLE_PREFIX, Settings


@dataclass(frozen=True)
class PublishedTopic:
    name: str  # short name: `cie consume --pipelines`; CIE_TOPIC_<NAME> overrides ``default``
    default: str  # the Kafka topic's default name
    contract: Any  # the msgspec type its messages decode to (a Struct or a tagged union)
    key: Callable[[Any], bytes]  # partition key: one entity's events stay in order

    @property
    def variable(self) -> str:
        return f"{TOPIC_VARIABLE_PREFIX}{self.name.upper()}"

    def kafka_name(self, settings: Settings) -> str:
        return settings.topic_names.get(self.name, self.default)


@dataclass(frozen=True)
class Topic(PublishedTopic):
    """A topic this project consumes."""

    pipeline: Callable[[EventTimeSettings, FreeFormLimits], Pipeline]  # its writer

    def dead_letter_name(self, settings: Settings) -> str:
        return settings.dead_letter_topic(self.kafka_name(settings))


def _improvement_key(event: Event) -> bytes:
    """The A/B test or task an event is about, so its lifecycle stays in order."""
    subject = getattr(event, "test_id", None) or getattr(event, "task_id", None)
    return str(subject or event.event_id).encode()


TOPICS: tuple[Topic, ...] = (
    Topic("fills", "fills", Fill, lambda fill: str(fill.trade_id).encode(), FillsPipeline),
    Topic("predictions", "predictions", Prediction,
          lambda prediction: str(prediction.prediction_id).encode(), PredictionsPipeline),
    Topic("bars", "bars", Bar, lambda bar: bar.symbol.encode(), BarsPipeline),
    Topic("improvements", "improvement-events", ImprovementEvent, _improvement_key,
          ImprovementsPipeline),
)
BY_NAME: dict[str, Topic] = {topic.name: topic for topic in TOPICS}

TASKS = PublishedTopic("tasks", "optimization-tasks", OptimizationTask,
                       lambda task: str(task.task_id).encode())
PUBLISHED: tuple[PublishedTopic, ...] = (TASKS,)


def kafka_topic(settings: Settings, name: str) -> str:
    """The Kafka name of the topic called ``name`` in this table."""
    return BY_NAME[name].kafka_name(settings)


def pipelines(
    settings: Settings, names: Iterable[str] | None = None, table: Sequence[Topic] = TOPICS
) -> dict[str, Pipeline]:
    """``{kafka topic: pipeline}`` for the named topics of ``table`` (default: all)."""
    by_name = {topic.name: topic for topic in table}
    chosen = list(by_name) if names is None else list(names)
    unknown = set(chosen) - set(by_name)
    if unknown:
        raise SettingsError(f"unknown topics {sorted(unknown)}; choose from {sorted(by_name)}")
    times = EventTimeSettings(future=timedelta(seconds=settings.future_tolerance_seconds),
                      skew=timedelta(milliseconds=settings.clock_skew_tolerance_ms))
    free_form = FreeFormLimits(max_bytes=settings.free_form_max_bytes,
                               max_elements=settings.free_form_max_elements,
                               max_depth=settings.free_form_max_depth)
    return {by_name[name].kafka_name(settings): by_name[name].pipeline(times, free_form)
            for name in chosen}


def unknown_names(settings: Settings) -> list[str]:
    """CIE_TOPIC_* variables that name no topic of this table (a typo stays unnoticed)."""
    known = {topic.name for topic in (*TOPICS, *PUBLISHED)}
    return sorted(f"{TOPIC_VARIABLE_PREFIX}{n.upper()}"
                  for n in settings.topic_names if n not in known)


def of_event(event: Any) -> Topic:
    """The topic an event belongs on."""
    for topic in TOPICS:
        if isinstance(event, topic.contract):
            return topic
    raise TypeError(f"not a contract of any topic: {type(event).__name__}")
