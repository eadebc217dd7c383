"""What each child of ``cie consume --processes N`` is given."""

from __future__ import annotations

from consumers.platform.processes import child_environments, without_processes_option


def test_each_child_serves_on_its_own_port_and_joins_as_its_own_static_member() -> None:
    envs = child_environments({"A": "1", "CIE_KAFKA_GROUP_INSTANCE_ID": "pod-7"}, 3, 9108)
    assert [e["CIE_METRICS_PORT"] for e in envs] == ["9108", "9109", "9110"]
    assert [e["CIE_KAFKA_GROUP_INSTANCE_ID"] for e in envs] == ["pod-7-0", "pod-7-1", "pod-7-2"]
    assert all(e["A"] == "1" for e in envs)


def test_ephemeral_ports_stay_ephemeral_and_no_static_membership_is_invented() -> None:
    envs = child_environments({}, 2, 0)
    assert [e["CIE_METRICS_PORT"] for e in envs] == ["0", "0"]
    assert all("CIE_KAFKA_GROUP_INSTANCE_ID" not in e for e in envs)


def test_a_child_runs_the_parents_command_less_the_processes_option() -> None:
    assert without_processes_option(["consume", "--processes", "2", "--pipelines", "bars"]) == [
        "consume", "--pipelines", "bars"]
    assert without_processes_option(["consume", "--processes=4"]) == ["consume"]
