"""deploy/kubernetes: valid against the Kubernetes schemas (offline), and the policy of issue 15.

Policy: the drain fits in the grace period, probes on the right paths, a locked-down
container, secrets only by reference, migrations as a Job and `--no-migrate` in the pods.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from api.settings import Settings
from tests.support import ROOT

DIR = ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes the manifests are written for (`preStop.sleep` is beta there).
VERSIONS = ("1.30.0", "1.37.0")


def _documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


def _resources() -> dict[str, dict[str, Any]]:
    kustomization = _documents(DIR / "kustomization.yaml")[0]
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in _documents(DIR / name):
            found[doc["kind"]] = doc
    return found


def _container(kind: str) -> dict[str, Any]:
    pod = _resources()[kind]["spec"]["template"]["spec"]
    containers: list[dict[str, Any]] = pod["containers"]
    assert len(containers) == 1
    return containers[0]


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e for e in container["env"]}


def _flag(command: list[str], name: str) -> str:
    return command[command.index(name) + 1]


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_documents(DIR / "kustomization.yaml")[0]["resources"])
    on_disk = {p.name for p in DIR.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk


@pytest.mark.parametrize("version", VERSIONS)
def test_every_manifest_validates_strictly(version: str) -> None:
    for kind, doc in _resources().items():
        kubernetes_validate.validate(doc, version, strict=True)  # raises on any error
        assert kind


def test_the_validator_rejects_a_broken_manifest() -> None:
    doc = _resources()["Deployment"]
    doc["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]["pathh"] = "/"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(doc, VERSIONS[-1], strict=True)


def test_the_grace_period_covers_prestop_drain_and_in_flight_requests() -> None:
    pod = _resources()["Deployment"]["spec"]["template"]["spec"]
    api = _container("Deployment")
    pre_stop = api["lifecycle"]["preStop"]["sleep"]["seconds"]
    drain = float(_env(api)["SHUTDOWN_DRAIN_SECONDS"]["value"])
    graceful = float(_flag(api["command"], "--graceful-timeout"))
    # The readiness probe must see the drain's 503 before the drain ends.
    probe = api["readinessProbe"]
    assert probe["periodSeconds"] * probe["failureThreshold"] < drain
    assert pre_stop > 0 and drain > 0
    assert pod["terminationGracePeriodSeconds"] >= pre_stop + drain + graceful + 5


def test_probes_use_the_service_endpoints() -> None:
    api = _container("Deployment")
    port = api["ports"][0]
    assert port["containerPort"] == 8000 and _flag(api["command"], "--port") == "8000"
    assert api["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert api["livenessProbe"]["httpGet"]["path"] == "/health"  # never the database
    assert api["startupProbe"]["httpGet"]["path"] == "/health"
    startup = api["startupProbe"]
    # The start-up database wait (DB_STARTUP_TIMEOUT) fits in the startup probe's budget.
    budget = startup["periodSeconds"] * startup["failureThreshold"]
    assert budget > Settings.model_fields["db_startup_timeout"].default


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_containers_are_locked_down(kind: str) -> None:
    pod = _resources()[kind]["spec"]["template"]["spec"]
    container = _container(kind)
    context = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] != 0
    assert context["runAsNonRoot"] is True
    assert context["allowPrivilegeEscalation"] is False
    assert context["readOnlyRootFilesystem"] is True
    assert context["capabilities"]["drop"] == ["ALL"]
    assert "add" not in context["capabilities"]
    assert pod["automountServiceAccountToken"] is False
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["limits"]["memory"]


@pytest.mark.parametrize("kind", ["Deployment", "Job"])
def test_secrets_only_by_reference(kind: str) -> None:
    env = _env(_container(kind))
    for name in ("NEON_DB_URL", "BETTER_AUTH_SECRET"):
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["key"] == name
    assert "Secret" not in _resources()  # created by the operator, never committed
    for path in DIR.glob("*.yaml"):
        assert "postgresql://" not in path.read_text(encoding="utf-8").replace(
            "'postgresql://...'", ""
        ), path


def test_migrations_run_once_as_a_job_and_pods_do_not_migrate() -> None:
    assert _container("Job")["command"] == ["tasks-api", "migrate"]
    api = _container("Deployment")
    assert "--no-migrate" in api["command"]
    assert _env(api)["MIGRATE_ON_START"]["value"] == "false"


def test_scaling_objects_match_the_deployment() -> None:
    resources = _resources()
    deployment = resources["Deployment"]
    labels = deployment["spec"]["selector"]["matchLabels"]
    assert deployment["spec"]["replicas"] == 3
    assert resources["Service"]["spec"]["selector"] == labels
    assert resources["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"] == labels
    hpa = resources["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["minReplicas"] == deployment["spec"]["replicas"]
    assert hpa["metrics"][0]["resource"]["name"] == "cpu"
    # Every pod's pool at the HPA's maximum fits Neon's pooled budget (README), with room.
    pool_max = int(_env(_container("Deployment"))["DB_POOL_MAX"]["value"])
    assert hpa["maxReplicas"] * pool_max <= 100
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/path"] == "/metrics"
    assert annotations["prometheus.io/port"] == "8000"
