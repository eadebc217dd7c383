"""`cie topics ensure` on the real broker: every source and dead-letter topic, with the
project's topic settings, created once; a second run changes nothing."""

from __future__ import annotations

import uuid

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from consumers.ingest.kafka import topic_config
from consumers.topics import TOPICS
from tests.support.cie import run_cie
from tests.support.stack import Stack


async def ensure(stack: Stack, names: dict[str, str]) -> str:
    code, out = await run_cie("topics", "ensure", "--partitions", "2", env={
        "KAFKA_BOOTSTRAP_SERVERS": stack.kafka, "CIE_LOG_FORMAT": "json", **names})
    assert code == 0, out
    return out


async def test_topics_ensure_creates_every_topic_once_with_its_settings(stack: Stack) -> None:
    tag = uuid.uuid4().hex[:8]
    names = {topic.variable: f"{topic.default}-{tag}" for topic in TOPICS}
    sources = sorted(names.values())
    dead_letters = [f"{name}.dlq" for name in sources]
    admin = AIOKafkaAdminClient(bootstrap_servers=stack.kafka)
    await admin.start()
    try:
        first = await ensure(stack, names)
        assert all(name in first for name in sources + dead_letters)
        described = {t["topic"]: len(t["partitions"])
                     for t in await admin.describe_topics(sources + dead_letters)}
        assert described == {**dict.fromkeys(sources, 2), **dict.fromkeys(dead_letters, 1)}
        responses = await admin.describe_configs([
            ConfigResource(ConfigResourceType.TOPIC, name) for name in sources + dead_letters])
        configs = {resource[3]: {entry[0]: entry[1] for entry in resource[4]}
                   for response in responses for resource in response.resources}
        for name in sources + dead_letters:
            wanted = topic_config(dead_letters=name.endswith(".dlq"), replicas=1)
            assert {key: configs[name][key] for key in wanted} == wanted, name

        second = await ensure(stack, names)  # nothing left to create
        assert '"created": []' in second
    finally:
        await admin.delete_topics(sources + dead_letters)
        await admin.close()
