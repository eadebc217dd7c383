"""The Kubernetes manifests: both overlays render with kustomize, core objects validate
against the Kubernetes schemas (kubernetes-validate), custom resources (KEDA, Prometheus
Operator, CloudNativePG) carry their required fields, and every workload follows the rules
operators rely on (probes, drain time, security context, secrets by reference)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from consumers.cli.parser import build_parser
from consumers.errors import SettingsError
from consumers.ingest.kafka import topic_config
from consumers.platform.settings import ENVIRONMENT, SECRET_VARIABLES, load_settings
from consumers.topics import PUBLISHED, TOPICS, unknown_names
from tests.support.platform import platform
from tests.support.stack import REPO

# kustomize and the operators' CRDs may still be building in the background (stack.sh test)
pytestmark = pytest.mark.usefixtures("background_tools")

K8S = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.30.0"
CUSTOM_KINDS = {"ScaledObject", "TriggerAuthentication", "PodMonitor", "Cluster", "ScheduledBackup",
                "KafkaTopic"}
PARTITIONS = {"dev": 3, "prod": 12}  # the topics' partition counts in each environment


def kustomize() -> str:
    for candidate in (os.environ.get("KUSTOMIZE"), shutil.which("kustomize"),
                      str(REPO / ".stack" / "bin" / "kustomize")):
        if candidate and Path(candidate).exists():
            return candidate
    pytest.fail("kustomize is not installed: deploy/local/stack.sh up installs it (go install)")


def render(path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([kustomize(), "build", str(path)], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=["dev", "prod"])
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def pod_specs(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    specs = [o["spec"]["template"]["spec"] for o in objects if o["kind"] in ("Deployment", "Job")]
    specs += [o["spec"]["jobTemplate"]["spec"]["template"]["spec"]
              for o in by_kind(objects, "CronJob")]
    return specs


def test_core_objects_validate_against_the_kubernetes_schemas(overlay: tuple[str, list[Any]]) -> None:
    _, objects = overlay
    core = [o for o in objects if o["kind"] not in CUSTOM_KINDS]
    assert {o["kind"] for o in core} >= {"Deployment", "Job", "CronJob", "ConfigMap",
                                         "PodDisruptionBudget", "ServiceAccount"}
    for obj in core:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)


def test_custom_resources_have_their_required_fields(overlay: tuple[str, list[Any]]) -> None:
    name, objects = overlay
    deployments = {d["metadata"]["name"] for d in by_kind(objects, "Deployment")}
    [scaler] = by_kind(objects, "ScaledObject")
    assert scaler["apiVersion"] == "keda.sh/v1alpha1"
    assert scaler["spec"]["scaleTargetRef"]["name"] == "cie-ingest" in deployments
    assert scaler["spec"]["maxReplicaCount"] <= PARTITIONS[name]
    triggers = scaler["spec"]["triggers"]
    assert len(triggers) == len(TOPICS) > 0
    # every topic of the topic table, and nothing else, scales the consumers
    assert sorted(t["metadata"]["topic"] for t in triggers) == sorted(t.default for t in TOPICS)
    for trigger in triggers:
        assert trigger["type"] == "kafka"
        assert {"bootstrapServers", "consumerGroup", "topic", "lagThreshold"} <= set(trigger["metadata"])
        if "sasl" in trigger["metadata"]:
            auth = trigger["authenticationRef"]["name"]
            assert auth in {t["metadata"]["name"] for t in by_kind(objects, "TriggerAuthentication")}
    [monitor] = by_kind(objects, "PodMonitor")
    assert monitor["apiVersion"] == "monitoring.coreos.com/v1"
    assert monitor["spec"]["selector"]["matchLabels"]
    assert all(e["port"] == "metrics" for e in monitor["spec"]["podMetricsEndpoints"])


def test_workloads_follow_the_operating_rules(overlay: tuple[str, list[Any]]) -> None:
    _, objects = overlay
    [config] = by_kind(objects, "ConfigMap")
    assert set(config["data"]) <= set(ENVIRONMENT.values())
    drain = int(config["data"]["CIE_DRAIN_DEADLINE_SECONDS"])
    commands = set(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]
    specs = pod_specs(objects)
    run = [container["args"][0] for spec in specs for container in spec["containers"]]
    # every workload is checked below: the loops cannot pass by running zero times
    assert sorted(run) == ["archive", "consume", "maintain", "migrate", "notify", "rollup",
                           "schedule", "validate"]
    secrets_checked = 0
    for spec in specs:
        assert spec["securityContext"]["runAsNonRoot"] is True
        for container in spec["containers"]:
            assert container["args"][0] in commands
            security = container["securityContext"]
            assert security["readOnlyRootFilesystem"] is True
            assert security["allowPrivilegeEscalation"] is False
            assert security["capabilities"]["drop"] == ["ALL"]
            assert {"requests", "limits"} <= set(container["resources"])
            command = container["args"][0]
            secret_files = container_secret_files(spec, container)
            assert "DATABASE_URL" in secret_files, command
            if command == "notify":  # the webhook's token is a secret too
                assert secret_files["CIE_DISCORD_WEBHOOK_URL"] == (
                    "cie-notifier-credentials", "DISCORD_WEBHOOK_URL")
            assert {secret for secret, _ in secret_files.values()} == {OWN_SECRET[command]}
            secrets_checked += 1
    assert secrets_checked == len(run)
    deployments = by_kind(objects, "Deployment")
    assert sorted(d["metadata"]["name"] for d in deployments) == [
        "cie-ingest", "cie-notifier", "cie-scheduler", "cie-validator"]
    for deployment in deployments:
        spec = deployment["spec"]["template"]["spec"]
        assert spec["terminationGracePeriodSeconds"] > drain
        [container] = spec["containers"]
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        pdbs = [p for p in by_kind(objects, "PodDisruptionBudget")
                if p["spec"]["selector"]["matchLabels"] == deployment["spec"]["selector"]["matchLabels"]]
        assert len(pdbs) == 1, deployment["metadata"]["name"]


def test_scheduled_commands_run_one_at_a_time(overlay: tuple[str, list[Any]]) -> None:
    _, objects = overlay
    scheduled = {
        cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][0]: cron
        for cron in by_kind(objects, "CronJob")
    }
    assert set(scheduled) == {"archive", "maintain", "rollup"}
    for cron in scheduled.values():
        assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    for name in ("rollup", "archive"):  # a stuck run cannot hold the lock forever
        assert scheduled[name]["spec"]["jobTemplate"]["spec"]["activeDeadlineSeconds"] > 0


def test_each_environment_archives_to_a_bucket_of_its_own() -> None:
    """Two environments on one archive prefix would each find parts the other's database does
    not know (cie archive refuses them) and read each other's data."""
    def archive_url(environment: str) -> str:
        [cron] = [c for c in by_kind(render(K8S / "overlays" / environment), "CronJob")
                  if c["metadata"]["name"] == "cie-archive"]
        container = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]
        [url] = [e["value"] for e in container["env"] if e["name"] == "CIE_ARCHIVE_URL"]
        return str(url)

    dev, prod = archive_url("dev"), archive_url("prod")
    assert dev.split("/")[2] != prod.split("/")[2], (dev, prod)


def test_database_cluster_reference() -> None:
    objects = render(K8S / "database")
    [cluster] = by_kind(objects, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] == 3
    assert "timescaledb" in spec["imageName"]
    assert "timescaledb" in spec["postgresql"]["shared_preload_libraries"]
    store = spec["backup"]["barmanObjectStore"]
    assert store["destinationPath"].startswith("s3://") and "s3Credentials" in store
    [backup] = by_kind(objects, "ScheduledBackup")
    assert backup["spec"]["cluster"]["name"] == cluster["metadata"]["name"]
    assert backup["spec"]["schedule"]


# Least privilege: each component reads its own credentials, none shares another's.
OWN_SECRET = {"consume": "cie-ingest-credentials", "validate": "cie-validator-credentials",
              "migrate": "cie-owner-credentials", "maintain": "cie-owner-credentials",
              "rollup": "cie-rollup-credentials", "schedule": "cie-scheduler-credentials",
              "notify": "cie-notifier-credentials", "archive": "cie-archiver-credentials"}


def container_secret_files(spec: dict[str, Any], container: dict[str, Any]
                           ) -> dict[str, tuple[str, str]]:
    """Each secret setting the container reads, as (Secret, key): only ever through
    ``<NAME>_FILE`` pointing into a Secret mounted read-only, never as a variable's value."""
    env = container.get("env", [])
    names = {e["name"] for e in env} | {
        key for source in container.get("envFrom", []) for key in source.get("secretRef", {})}
    assert not names & set(SECRET_VARIABLES), container["name"]  # no secret in a variable
    assert not any("secretKeyRef" in e.get("valueFrom", {}) for e in env), container["name"]
    assert not any("secretRef" in source for source in container.get("envFrom", []))
    volumes = {v["name"]: v for v in spec.get("volumes", [])}
    mounts = {m["mountPath"]: m for m in container.get("volumeMounts", [])}
    files: dict[str, tuple[str, str]] = {}
    for e in env:
        name = e["name"].removesuffix("_FILE")
        if not e["name"].endswith("_FILE") or name not in SECRET_VARIABLES:
            continue
        directory, _, key = e["value"].rpartition("/")
        mount = mounts[directory]
        assert mount.get("readOnly") is True, (container["name"], directory)
        files[name] = (volumes[mount["name"]]["secret"]["secretName"], key)
    return files


def container_environment(objects: list[dict[str, Any]], spec: dict[str, Any],
                          container: dict[str, Any], secrets: Path) -> dict[str, str]:
    """What the container's process would see: its ConfigMaps' data, then its own env; a
    value from a Secret becomes a placeholder of the right shape (the secret stays unknown)."""
    config_maps = {c["metadata"]["name"]: c["data"] for c in by_kind(objects, "ConfigMap")}
    environment: dict[str, str] = {}
    for source in container.get("envFrom", []):
        environment.update(config_maps[source["configMapRef"]["name"]])
    for env in container.get("env", []):
        if "value" in env:
            environment[env["name"]] = env["value"]
    for name, (secret, key) in container_secret_files(spec, container).items():
        placeholder = secrets / secret / key  # the secret's file, a value of the right shape
        placeholder.parent.mkdir(parents=True, exist_ok=True)
        placeholder.write_text(
            "https://discord.com/api/webhooks/0/from-secret" if name.endswith("WEBHOOK_URL")
            else "postgresql://user:from-secret@db.cie.svc/cie" if name.endswith("_URL")
            else "from-secret")
        environment[name + "_FILE"] = str(placeholder)
    return environment


def test_every_container_command_line_starts_with_its_environment(
    overlay: tuple[str, list[Any]], tmp_path: Path
) -> None:
    """A dry run of each Deployment's, Job's and CronJob's command: its arguments parse and
    its settings load from what the manifests give it (a job that lacks a setting it needs,
    say the Kafka password once the overlay switches to SASL_SSL, exits 2 at start: here)."""
    from consumers.cli.main import needs_of

    _, objects = overlay
    containers = [(spec, c) for spec in pod_specs(objects) for c in spec["containers"]]
    assert len(containers) == 8
    for spec, container in containers:
        args = build_parser().parse_args(container["args"])
        environment = container_environment(objects, spec, container, tmp_path)
        try:
            settings = load_settings(environment, needs=needs_of(args))
        except SettingsError as exc:
            pytest.fail(f"{container['name']} ({' '.join(container['args'])}): {exc}")
        assert not unknown_names(settings), container["name"]


def test_only_the_metrics_scraper_reaches_the_pods(overlay: tuple[str, list[Any]]) -> None:
    _, objects = overlay
    [policy] = by_kind(objects, "NetworkPolicy")
    selector = policy["spec"]["podSelector"]["matchLabels"]
    templates = [o["spec"]["template"]["metadata"]["labels"]
                 for o in objects if o["kind"] in ("Deployment", "Job")]
    templates += [c["spec"]["jobTemplate"]["spec"]["template"]["metadata"]["labels"]
                  for c in by_kind(objects, "CronJob")]
    assert len(templates) == 8
    assert all(selector.items() <= labels.items() for labels in templates)  # every pod
    assert policy["spec"]["policyTypes"] == ["Ingress"]
    [rule] = policy["spec"]["ingress"]
    assert rule["ports"] == [{"protocol": "TCP", "port": "metrics"}]
    [peer] = rule["from"]
    assert peer["podSelector"]["matchLabels"] and peer["namespaceSelector"]["matchLabels"]


def test_strimzi_topics_are_the_topic_table(overlay: tuple[str, list[Any]]) -> None:
    """Every source topic and its dead-letter topic as a KafkaTopic, with the settings
    `cie topics ensure` gives clusters without Strimzi (consumers/topics.py)."""
    name, objects = overlay
    kafka_topics = {t["spec"]["topicName"]: t for t in by_kind(objects, "KafkaTopic")}
    sources = {t.default for t in TOPICS}
    published = {t.default for t in PUBLISHED}
    assert set(kafka_topics) == sources | {f"{t}.dlq" for t in sources} | published
    for topic_name, resource in kafka_topics.items():
        assert resource["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert resource["metadata"]["labels"]["strimzi.io/cluster"]
        spec = resource["spec"]
        dead_letters = topic_name.endswith(".dlq")
        assert spec["partitions"] == (1 if dead_letters else PARTITIONS[name])
        expected = topic_config(dead_letters=dead_letters, replicas=spec["replicas"])
        assert spec["config"] == expected, topic_name
    # KEDA never runs more consumers than a topic has partitions
    [scaler] = by_kind(objects, "ScaledObject")
    assert scaler["spec"]["maxReplicaCount"] <= PARTITIONS[name]


def test_keda_watches_the_cluster_the_consumers_use(overlay: tuple[str, list[Any]]) -> None:
    _, objects = overlay
    [config] = by_kind(objects, "ConfigMap")
    [scaler] = by_kind(objects, "ScaledObject")
    servers = {t["metadata"]["bootstrapServers"] for t in scaler["spec"]["triggers"]}
    assert servers == {config["data"]["KAFKA_BOOTSTRAP_SERVERS"]}


def test_an_upgrade_migrates_before_it_consumes_and_applies_again(
    overlay: tuple[str, list[Any]],
) -> None:
    """The consumers refuse an older schema themselves (test_migrations); the migrate Job
    must also never block the next apply: it is a hook for Argo CD, forced by Flux, and
    gone soon after it finished for kubectl."""
    _, objects = overlay
    [job] = by_kind(objects, "Job")
    annotations = job["metadata"]["annotations"]
    assert annotations["argocd.argoproj.io/hook"] == "PreSync"
    assert annotations["argocd.argoproj.io/hook-delete-policy"] == "BeforeHookCreation"
    assert annotations["kustomize.toolkit.fluxcd.io/force"] == "enabled"
    assert 0 < job["spec"]["ttlSecondsAfterFinished"] <= 3600


# CRDs of the operators whose custom resources the overlays render, as their projects publish
# them; deploy/local/stack.sh up fetches them from the Go module proxy into .stack/crds.
# (Strimzi's are not on a registry this project reaches: its KafkaTopics are checked field by
# field above.)
CRD_FILES = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "TriggerAuthentication": "keda.sh_triggerauthentications.yaml",
    "PodMonitor": "monitoring.coreos.com_podmonitors.yaml",
    "Cluster": "postgresql.cnpg.io_clusters.yaml",
    "ScheduledBackup": "postgresql.cnpg.io_scheduledbackups.yaml",
}


def crd_schema(kind: str, api_version: str) -> dict[str, Any]:
    directory = Path(os.environ.get("CIE_CRD_DIR", REPO / ".stack" / "crds"))
    path = directory / CRD_FILES[kind]
    if not path.exists():
        pytest.fail(f"{path} is missing: deploy/local/stack.sh up fetches the operators' CRDs")
    crd = yaml.safe_load(path.read_text())
    group, version = api_version.split("/")
    assert crd["spec"]["group"] == group and crd["spec"]["names"]["kind"] == kind
    [served] = [v for v in crd["spec"]["versions"] if v["name"] == version]
    return closed(served["schema"]["openAPIV3Schema"])


def closed(schema: Any) -> Any:
    """The API server drops fields a structural schema does not name; here they are errors,
    so a misspelt field fails the test instead of vanishing at apply time."""
    if isinstance(schema, dict):
        schema = {key: closed(value) for key, value in schema.items()}
        if ("properties" in schema and "additionalProperties" not in schema
                and not schema.get("x-kubernetes-preserve-unknown-fields")):
            schema["additionalProperties"] = False
    elif isinstance(schema, list):
        schema = [closed(item) for item in schema]
    return schema


def test_the_database_its_backups_and_the_restore_validate_against_cloudnativepg() -> None:
    """The CloudNativePG Cluster (barman object store: WAL and base backups to S3), its
    ScheduledBackup, and the documented point-in-time restore (a Cluster bootstrapped from
    those backups) are what the operator's CRD accepts."""
    restore_file = K8S / "database" / "restore" / "cluster-restore.yaml"
    objects = [*render(K8S / "database"), yaml.safe_load(restore_file.read_text())]
    assert sorted(o["kind"] for o in objects) == ["Cluster", "Cluster", "ScheduledBackup"]
    for obj in objects:
        schema = crd_schema(obj["kind"], obj["apiVersion"])
        schema["properties"]["metadata"] = {"type": "object"}
        jsonschema.validate(obj, schema)
    [restore] = [o for o in objects if "recovery" in o["spec"].get("bootstrap", {})]
    [cluster] = [o for o in objects if o["kind"] == "Cluster" and o is not restore]
    recovery = restore["spec"]["bootstrap"]["recovery"]
    [source] = restore["spec"]["externalClusters"]
    assert recovery["source"] == source["name"] and recovery["recoveryTarget"]["targetTime"]
    store = cluster["spec"]["backup"]["barmanObjectStore"]
    assert source["barmanObjectStore"]["destinationPath"] == store["destinationPath"]
    assert source["barmanObjectStore"]["serverName"] == cluster["metadata"]["name"]
    misspelt = json.loads(json.dumps(restore))
    misspelt["spec"]["bootstrap"]["recovery"]["recoveryTarget"]["targetTimestamp"] = (
        misspelt["spec"]["bootstrap"]["recovery"]["recoveryTarget"].pop("targetTime"))
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, crd_schema("Cluster", misspelt["apiVersion"]))


def test_custom_resources_validate_against_their_operators_crds(
    overlay: tuple[str, list[Any]],
) -> None:
    _, objects = overlay
    custom = [o for o in objects if o["kind"] in CRD_FILES]
    assert {o["kind"] for o in custom} >= {"ScaledObject", "PodMonitor"}
    for obj in custom:
        schema = crd_schema(obj["kind"], obj["apiVersion"])
        schema["properties"]["metadata"] = {"type": "object"}  # checked by Kubernetes itself
        jsonschema.validate(obj, schema)
    misspelt = json.loads(json.dumps(by_kind(objects, "ScaledObject")[0]))
    misspelt["spec"]["maxReplicas"] = misspelt["spec"].pop("maxReplicaCount")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(misspelt, crd_schema("ScaledObject", misspelt["apiVersion"]))


def test_the_database_images_are_the_platform_the_suite_runs() -> None:
    """deploy/platform.env states the versions once; production's cluster, its restore and
    docker-compose name exactly those images (the integration suite checks its own server
    runs them: tests/integration/test_platform.py)."""
    versions = platform()
    major, timescaledb = versions["POSTGRES_MAJOR"], versions["TIMESCALEDB_VERSION"]
    ha_image, image = versions["TIMESCALEDB_HA_IMAGE"], versions["TIMESCALEDB_IMAGE"]
    assert ha_image.endswith(f":pg{major}-ts{timescaledb.rsplit('.', 1)[0]}"), ha_image
    assert image.endswith(f":{timescaledb}-pg{major}"), image
    [cluster] = by_kind(render(K8S / "database"), "Cluster")
    restore = yaml.safe_load((K8S / "database" / "restore" / "cluster-restore.yaml").read_text())
    assert cluster["spec"]["imageName"] == ha_image
    assert restore["spec"]["imageName"] == ha_image
    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert compose["services"]["timescaledb"]["image"] == image
    for spec in (cluster["spec"], restore["spec"]):  # room for every database's scheduler
        parameters = spec["postgresql"]["parameters"]
        assert int(parameters["max_worker_processes"]) >= (
            int(parameters["timescaledb.max_background_workers"])
            + int(parameters["max_parallel_workers"]) + 1)
