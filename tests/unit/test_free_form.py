"""What one message's free-form JSON fields may decode to, and what a batch keeps of them.

Small-element JSON decodes to many times its size in Python objects; without these limits a
batch of 1 MiB feature vectors held gigabytes, past the pod's memory limit (issue #42, item 5;
the whole-process figure is tests/integration/test_memory.py's).
"""

from __future__ import annotations

import json
import tracemalloc
from typing import Any

import pytest

from consumers.contracts.bars import Bar
from consumers.contracts.fills import Fill
from consumers.contracts.free_form import FreeFormLimits, free_form_fields
from consumers.contracts.improvements import Improvement, ImprovementEvent
from consumers.contracts.predictions import Prediction
from consumers.errors import FreeFormTooLarge
from consumers.ingest.checkpoint import Batch
from consumers.ingest.pipelines.base import Encoded, Pipeline
from consumers.ingest.pipelines.improvements import ImprovementsPipeline
from consumers.ingest.pipelines.predictions import PredictionsPipeline
from tests.unit.test_hostile_messages import NOW, VALID, record

LIMITS = FreeFormLimits(max_bytes=4096, max_elements=300, max_depth=5)


def prediction(feature_vector: Any) -> bytes:
    return json.dumps({**VALID["predictions"], "feature_vector": feature_vector}).encode()


def improvement(**payloads: Any) -> bytes:
    return json.dumps({**VALID["improvements"], **payloads}).encode()


def nested(depth: int) -> Any:
    """An object ``depth`` levels deep: {"a": {"a": ... {"a": 1}}}."""
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


def refusal(pipeline: Pipeline, value: bytes) -> str:
    with pytest.raises(FreeFormTooLarge) as refused:
        pipeline.accept(value, NOW)
    return str(refused.value)


def test_the_free_form_fields_are_found_in_every_contract() -> None:
    assert free_form_fields(Prediction) == {Prediction: ("feature_vector",)}
    assert free_form_fields(Bar) == {Bar: ()} and free_form_fields(Fill) == {Fill: ()}
    by_kind = free_form_fields(ImprovementEvent)
    assert by_kind[Improvement] == ("old_value", "new_value", "performance_before",
                                    "performance_after", "improvement_metrics")
    assert sum(len(names) for names in by_kind.values()) >= 9  # metrics, configs, results


def test_a_field_at_the_limits_is_accepted() -> None:
    pipeline = PredictionsPipeline(free_form=LIMITS)
    at_depth = pipeline.accept(prediction(nested(LIMITS.max_depth)), NOW)
    assert '"a":{"a":{"a":{"a":{"a":1}}}}' in at_depth.line
    values = [0.5] * (LIMITS.max_elements - 1)  # the list itself is the 300th value
    assert pipeline.accept(prediction({"v": values}), NOW).line.count("0.5") == len(values)


def test_a_field_nested_too_deep_is_refused() -> None:
    reason = refusal(PredictionsPipeline(free_form=LIMITS),
                     prediction(nested(LIMITS.max_depth + 1)))
    assert reason == "feature_vector: nested deeper than 5 levels (CIE_FREE_FORM_MAX_DEPTH)"


def test_too_many_values_are_refused_counting_every_field_of_the_message() -> None:
    pipeline = ImprovementsPipeline(free_form=LIMITS)
    half = [1] * (LIMITS.max_elements // 2)
    pipeline.accept(improvement(old_value=half[:-1], new_value=half[:-1]), NOW)
    reason = refusal(pipeline, improvement(old_value=half, new_value=[half]))
    assert reason.startswith("new_value: the free-form fields hold more than 300 values")


def test_a_long_field_is_refused_before_it_is_decoded() -> None:
    pipeline = PredictionsPipeline(free_form=LIMITS)
    text = {"v": "x" * LIMITS.max_bytes}  # one value: only its length is past the limit
    reason = refusal(pipeline, prediction(text))
    assert reason == (f"feature_vector: {len(json.dumps(text))} bytes of JSON; at most 4096 "
                      "(CIE_FREE_FORM_MAX_BYTES)")
    # a long message whose free-form field is short passes (only the field is measured)
    padded = json.dumps({**VALID["predictions"], "padding": "x" * 10_000}).encode()
    assert pipeline.accept(padded, NOW).line


def test_refused_fields_become_dead_letters_and_the_rest_of_the_batch_lands() -> None:
    batch = Batch()
    batch.add(PredictionsPipeline(free_form=LIMITS), [
        record(prediction(nested(9)), 0), record(prediction({"v": "x" * 5000}), 1),
        record(prediction({"rsi": 55.5}), 2)])
    assert [(d.record.offset, d.error_class) for d in batch.letters] == [
        (0, "FreeFormTooLarge"), (1, "FreeFormTooLarge")]
    assert [r.offset for r in batch.event_records] == [2]


def test_a_batch_keeps_the_encoded_row_not_the_decoded_objects() -> None:
    """A decoded vector of numbers is ~25 times its JSON: kept, 100 of them would be 20 MB."""
    values = [round(0.001 * i, 3) for i in range(5000)]  # ~32 KiB of JSON
    value = prediction({"v": values})
    pipeline = PredictionsPipeline()
    tracemalloc.start()
    try:
        batch = Batch()
        batch.add(pipeline, [record(value, offset) for offset in range(100)])
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(batch.events) == 100
    encoded: Encoded = batch.events[0]
    assert encoded.event.feature_vector is None and encoded.line.count(",") == len(values) - 1
    assert batch.held_bytes >= 100 * (len(value) + len(encoded.line))  # values, rows
    assert held < 2 * batch.held_bytes  # the account is what the batch holds, near enough


def test_an_improvement_event_keeps_its_payloads_as_json_text() -> None:
    pipeline = ImprovementsPipeline()
    statement = pipeline.accept(improvement(old_value={"lr": 0.1}, new_value=[1, 2]), NOW)
    assert statement.event.old_value is None and statement.event.new_value is None
    assert '{"lr":0.1}' in statement.args and "[1,2]" in statement.args
    assert pipeline.held_bytes(statement) > len('{"lr":0.1}[1,2]')


def test_a_batch_stops_taking_records_at_its_byte_limit() -> None:
    value = prediction({"rsi": 55.5})
    pipeline = PredictionsPipeline()
    one = len(value) + pipeline.held_bytes(pipeline.accept(value, NOW))
    batch = Batch()
    records = [record(value, offset) for offset in range(10)]
    assert batch.add(pipeline, records, max_held_bytes=3 * one) == 3
    assert batch.held_bytes == 3 * one
    full = Batch()
    assert full.add(pipeline, records[:1], max_held_bytes=1) == 1  # an empty batch takes one
    assert full.add(pipeline, records[1:], max_held_bytes=1) == 0
