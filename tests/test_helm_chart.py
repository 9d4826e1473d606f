"""The Helm chart (deploy/helm/maskstream), checked by the real tools.

Helm itself renders and lints it (the pinned version, tests/helm_binary.py);
every rendered Kubernetes object is validated against the API's own schemas
(kubernetes-validate) and the KEDA ScaledObjects against KEDA's CRD schema
and the ServiceMonitor and PrometheusRule against the Prometheus Operator's
(both vendored in tests/schemas). The rest pins what a deployment depends on: a
worker keeps its volume, probes and stop grace period, required settings
are required, the autoscaler never exceeds the raw topic's partitions, every
setting reaches the pods, and the chart's alert rules are monitoring's.
The policy scan (checkov) is not run here: docs/kubernetes.md says why and how.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from stream.common import settings
from tests.helm_binary import HelmUnavailable, find_or_build_helm

pytestmark = pytest.mark.helm

REPO_ROOT = Path(__file__).resolve().parent.parent
CHART = REPO_ROOT / "deploy" / "helm" / "maskstream"
MINIMAL_VALUES = CHART / "ci" / "minimal-values.yaml"
FULL_VALUES = CHART / "ci" / "full-values.yaml"
SCHEMAS = REPO_ROOT / "tests" / "schemas"
MONITORING_RULES = REPO_ROOT / "monitoring" / "prometheus" / "rules"
CHART_RULES = CHART / "files" / "prometheus-rules"
# The Kubernetes releases whose schemas kubernetes-validate checks against: the
# oldest the chart accepts (Chart.yaml's kubeVersion) and the newest it knows.
KUBERNETES_VERSIONS = ("1.25.0", "1.37.0")
NAMESPACE = "maskstream"

Manifests = list[dict[str, Any]]
Render = Callable[..., Manifests]


@pytest.fixture(scope="session")
def helm() -> Path:
    try:
        return find_or_build_helm()
    except HelmUnavailable as exc:
        pytest.skip(str(exc))


def _run_helm(helm: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(helm), *args], capture_output=True, text=True, timeout=120, check=False
    )


def _template_args(values: tuple[Path, ...], sets: tuple[str, ...]) -> list[str]:
    args = ["template", "maskstream", str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    for assignment in sets:
        args += ["--set", assignment]
    return args


@pytest.fixture(scope="session")
def render(helm: Path) -> Render:
    """`helm template` with values files and --set assignments, parsed into objects."""

    def _render(*values: Path, sets: tuple[str, ...] = ()) -> Manifests:
        result = _run_helm(helm, *_template_args(values, sets))
        assert result.returncode == 0, result.stderr
        return [doc for doc in yaml.safe_load_all(result.stdout) if doc]

    return _render


def _render_error(helm: Path, *values: Path, sets: tuple[str, ...] = ()) -> str:
    result = _run_helm(helm, *_template_args(values, sets))
    assert result.returncode != 0, "the chart rendered, but it should have refused"
    return result.stderr


def _one(manifests: Manifests, kind: str, name_suffix: str = "") -> dict[str, Any]:
    found = [
        m for m in manifests if m["kind"] == kind and m["metadata"]["name"].endswith(name_suffix)
    ]
    assert len(found) == 1, f"expected one {kind} *{name_suffix}, got {len(found)}"
    return found[0]


def _container(workload: dict[str, Any]) -> dict[str, Any]:
    containers = workload["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container["env"]}


# --- Helm's own checks -------------------------------------------------------


@pytest.mark.parametrize(
    "values", [(), (MINIMAL_VALUES,), (FULL_VALUES,)], ids=["defaults", "minimal", "full"]
)
def test_helm_lint_is_clean(helm: Path, values: tuple[Path, ...]) -> None:
    args = ["lint", "--strict", str(CHART), "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    result = _run_helm(helm, *args)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 chart(s) linted, 0 chart(s) failed" in result.stdout
    assert "[ERROR]" not in result.stdout and "[WARNING]" not in result.stdout


# --- Schemas -----------------------------------------------------------------

# Kinds of other projects: their schemas are in their CRDs (vendored, each
# file says from which release), not in the Kubernetes API's.
CRD_FILES = {
    "ScaledObject": "keda.sh_scaledobjects.yaml",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitors.yaml",
    "PrometheusRule": "monitoring.coreos.com_prometheusrules.yaml",
}


def _strict(schema: Any) -> Any:
    """The CRD's schema rejecting unknown fields, as the API server does under
    kubectl's default strict field validation (a bare schema would accept them)."""
    if isinstance(schema, list):
        return [_strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    strict = {key: _strict(value) for key, value in schema.items()}
    if "(?i)" in str(schema.get("pattern", "")):
        # Go's regexp takes flags anywhere (^(?i)...); Python's only at the start.
        strict["pattern"] = "(?i)" + schema["pattern"].replace("(?i)", "")
    if (
        "properties" in schema
        and "additionalProperties" not in schema
        and not schema.get("x-kubernetes-preserve-unknown-fields")
    ):
        strict["additionalProperties"] = False
    return strict


def _crd_schema(manifest: dict[str, Any]) -> dict[str, Any]:
    crd = yaml.safe_load((SCHEMAS / CRD_FILES[manifest["kind"]]).read_text())
    group, version_name = manifest["apiVersion"].split("/")
    assert crd["spec"]["group"] == group
    (version,) = [v for v in crd["spec"]["versions"] if v["name"] == version_name]
    schema: dict[str, Any] = _strict(version["schema"]["openAPIV3Schema"])
    return schema


def _validate(manifest: dict[str, Any], kubernetes_version: str) -> None:
    if manifest["kind"] in CRD_FILES:
        jsonschema.validate(manifest, _crd_schema(manifest))
    else:
        kubernetes_validate.validate(manifest, kubernetes_version, strict=True)


@pytest.mark.parametrize("values", [MINIMAL_VALUES, FULL_VALUES], ids=["minimal", "full"])
def test_every_rendered_object_is_valid(render: Render, values: Path) -> None:
    for manifest in render(values):
        for version in KUBERNETES_VERSIONS:
            _validate(manifest, version)


@pytest.mark.parametrize(
    ("kind", "name_suffix", "path"),
    [
        ("StatefulSet", "-worker", ["spec", "template", "spec"]),
        ("ScaledObject", "-worker", ["spec"]),
        ("ServiceMonitor", "", ["spec", "endpoints", 0]),
        ("PrometheusRule", "", ["spec", "groups", 0]),
    ],
)
def test_schema_checks_catch_a_misspelt_field(
    render: Render, kind: str, name_suffix: str, path: list[str | int]
) -> None:
    """The validators are not vacuous: an unknown field fails each kind's."""
    manifest = _one(render(FULL_VALUES), kind, name_suffix)
    _validate(manifest, KUBERNETES_VERSIONS[-1])
    target: Any = manifest
    for step in path:
        target = target[step]
    target["terminationGracePeriod"] = 60
    with pytest.raises((kubernetes_validate.ValidationError, jsonschema.ValidationError)):
        _validate(manifest, KUBERNETES_VERSIONS[-1])


# --- Required settings -------------------------------------------------------

REQUIRED = {
    "kafka.bootstrapServers": "kafka.bootstrapServers is required",
    "sqs.queueUrl": "sqs.queueUrl is required",
    "database.existingSecret": "database.existingSecret is required",
    "keyring.existingSecret": "keyring.existingSecret is required",
}


@pytest.mark.parametrize("setting", sorted(REQUIRED))
def test_a_missing_required_setting_stops_the_render(helm: Path, setting: str) -> None:
    error = _render_error(helm, MINIMAL_VALUES, sets=(f"{setting}=",))
    assert REQUIRED[setting] in error


# --- Workers -----------------------------------------------------------------


def test_a_worker_has_its_volume_probes_and_grace_period(render: Render) -> None:
    statefulset = _one(render(MINIMAL_VALUES), "StatefulSet", "-worker")
    pod = statefulset["spec"]["template"]["spec"]
    container = _container(statefulset)
    env = _env(container)

    (claim,) = statefulset["spec"]["volumeClaimTemplates"]
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts[claim["metadata"]["name"]] == env["MASKSTREAM_DATA_DIR"]
    assert claim["spec"]["resources"]["requests"]["storage"]

    web_port = next(p for p in container["ports"] if p["name"] == "web")
    assert str(web_port["containerPort"]) == env["MASKSTREAM_WEB_PORT"]
    assert env["MASKSTREAM_WEB_HOST"] == "0.0.0.0"
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "web"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "web"}
    assert container["startupProbe"]["httpGet"] == {"path": "/health", "port": "web"}

    # A clean stop takes about 15 s (docker-compose.yml gives 30).
    assert pod["terminationGracePeriodSeconds"] >= 30
    assert env["MASKSTREAM_KEYRING_FILE"].startswith(
        next(m["mountPath"] for m in container["volumeMounts"] if m["name"] == "keyring")
    )
    assert env["DATABASE_URL"] == {
        "secretKeyRef": {"name": "maskstream-database", "key": "DATABASE_URL"}
    }


def test_workers_have_a_disruption_budget(render: Render) -> None:
    manifests = render(MINIMAL_VALUES)
    statefulset = _one(manifests, "StatefulSet", "-worker")
    budget = _one(manifests, "PodDisruptionBudget", "-worker")
    assert budget["spec"]["maxUnavailable"] == 1
    assert budget["spec"]["selector"] == statefulset["spec"]["selector"]


@pytest.mark.parametrize("values", [MINIMAL_VALUES, FULL_VALUES], ids=["minimal", "full"])
def test_pods_run_locked_down(render: Render, values: Path) -> None:
    for workload in [m for m in render(values) if m["kind"] in ("Deployment", "StatefulSet")]:
        pod = workload["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        container = _container(workload)
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert container["securityContext"]["capabilities"]["drop"] == ["ALL"]
        assert {"requests", "limits"} <= container["resources"].keys()
        tmp = next(m for m in container["volumeMounts"] if m["mountPath"] == "/tmp")
        assert {"name": tmp["name"], "emptyDir": {"sizeLimit": "64Mi"}} in pod["volumes"]


# --- The bridge --------------------------------------------------------------


def test_the_bridge_probes_its_metrics_port_and_outlasts_its_stop(render: Render) -> None:
    deployment = _one(render(MINIMAL_VALUES), "Deployment", "-bridge")
    container = _container(deployment)
    env = _env(container)
    metrics = next(p for p in container["ports"] if p["name"] == "metrics")
    assert str(metrics["containerPort"]) == env["MASKSTREAM_BRIDGE_METRICS_PORT"]
    assert container["livenessProbe"]["httpGet"] == {"path": "/health", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "metrics"}
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace > float(env["MASKSTREAM_BRIDGE_SHUTDOWN_TIMEOUT"])
    # The bridge masks nothing: no key ring, no database.
    assert "DATABASE_URL" not in env and "MASKSTREAM_KEYRING_FILE" not in env


def test_a_grace_period_shorter_than_the_bridges_stop_is_refused(helm: Path) -> None:
    error = _render_error(helm, MINIMAL_VALUES, sets=("bridge.shutdownTimeout=40",))
    assert "must exceed bridge.shutdownTimeout" in error


# --- Scaling -----------------------------------------------------------------


def test_no_autoscaler_without_keda(render: Render) -> None:
    manifests = render(MINIMAL_VALUES)
    kinds = {m["kind"] for m in manifests}
    assert not kinds & {"ScaledObject", "HorizontalPodAutoscaler"}
    assert _one(manifests, "Deployment", "-bridge")["spec"]["replicas"] == 2
    assert _one(manifests, "StatefulSet", "-worker")["spec"]["replicas"] == 2


def test_keda_scales_workers_up_to_the_raw_topics_partitions(render: Render) -> None:
    manifests = render(MINIMAL_VALUES, sets=("keda.enabled=true", "topics.partitions=24"))
    worker = _one(manifests, "ScaledObject", "-worker")
    assert worker["spec"]["maxReplicaCount"] == 24
    (trigger,) = worker["spec"]["triggers"]
    assert trigger["type"] == "kafka"
    assert trigger["metadata"]["topic"] == "logins.raw"
    assert trigger["metadata"]["consumerGroup"] == "maskstream"
    assert worker["spec"]["scaleTargetRef"]["kind"] == "StatefulSet"
    bridge = _one(manifests, "ScaledObject", "-bridge")
    assert [t["type"] for t in bridge["spec"]["triggers"]] == ["aws-sqs-queue"]
    # KEDA owns the replica counts: the workloads name none that an upgrade would reset.
    assert "replicas" not in _one(manifests, "StatefulSet")["spec"]
    assert "replicas" not in _one(manifests, "Deployment")["spec"]


def test_more_workers_than_partitions_is_refused(helm: Path) -> None:
    error = _render_error(
        helm, MINIMAL_VALUES, sets=("keda.enabled=true", "keda.worker.maxReplicaCount=9")
    )
    assert "exceeds topics.partitions (8)" in error


# --- Configuration -----------------------------------------------------------

# Read by the local stack and the launcher only, never by a deployed process.
LOCAL_STACK_ONLY = {
    "MASKSTREAM_STACK_DIR",
    "MASKSTREAM_STACK_BROKERS",
    "MASKSTREAM_SCRAPE_TARGETS_DIR",
}
# The key ring is mounted as a file from its Secret; the inline form is not offered.
NOT_OFFERED = {"MASKSTREAM_KEYRING"}
SETTING_SOURCES = [
    REPO_ROOT / "stream" / "common" / "settings.py",
    REPO_ROOT / "stream" / "common" / "logs.py",
]


def _setting_names() -> set[str]:
    # _env("NAME", ...), _env_int(...), _choice(...) in settings; os.environ.get in logs.
    pattern = re.compile(
        r'_(?:env\w*|choice|getenv)\(\s*"([A-Z][A-Z0-9_]+)"|environ\.get\("([A-Z][A-Z0-9_]+)"'
    )
    names: set[str] = set()
    for source in SETTING_SOURCES:
        for match in pattern.finditer(source.read_text()):
            names.add(match.group(1) or match.group(2))
    return names


def test_every_setting_reaches_the_pods(render: Render) -> None:
    names = _setting_names()
    assert "KAFKA_BOOTSTRAP_SERVERS" in names and "MASKSTREAM_LOG_FORMAT" in names
    manifests = render(FULL_VALUES, sets=("sqs.endpointUrl=http://sqs.example:4566",))
    rendered: set[str] = set()
    for workload in [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]:
        rendered |= _env(_container(workload)).keys()
    assert names - LOCAL_STACK_ONLY - NOT_OFFERED <= rendered


def test_the_values_config_defaults_are_the_codes(render: Render) -> None:
    """values.yaml's `config` spells out defaults: they must be settings.py's own."""
    config = yaml.safe_load((CHART / "values.yaml").read_text())["config"]
    assert settings.load({}) == settings.load({name: str(value) for name, value in config.items()})


# --- Monitoring --------------------------------------------------------------


def test_the_charts_rules_are_monitorings(render: Render) -> None:
    """The chart packs a copy (Helm reads files only inside the chart): it must not drift."""
    ours = {path.name: path.read_text() for path in CHART_RULES.glob("*.yml")}
    theirs = {path.name: path.read_text() for path in MONITORING_RULES.glob("*.yml")}
    assert ours == theirs, "copy monitoring/prometheus/rules/*.yml to " + str(CHART_RULES)
    rule = _one(render(FULL_VALUES), "PrometheusRule")
    groups = [g for name in sorted(theirs) for g in yaml.safe_load(theirs[name])["groups"]]
    assert rule["spec"]["groups"] == groups


def test_scrapes_give_the_job_names_the_alerts_expect(render: Render) -> None:
    manifests = render(FULL_VALUES)
    monitor = _one(manifests, "ServiceMonitor")
    jobs = {
        m["metadata"]["labels"][monitor["spec"]["jobLabel"]]
        for m in manifests
        if m["kind"] == "Service"
    }
    assert jobs == {"maskstream-bridge", "maskstream-worker"}
    for workload in [m for m in manifests if m["kind"] in ("Deployment", "StatefulSet")]:
        annotations = workload["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
