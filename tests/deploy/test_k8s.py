"""deploy/k8s and deploy/kserve, validated offline: the Kubernetes schemas (kubernetes-validate, strict),
a structural schema of the KServe resources, and the wiring between the manifests and servekit itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from servekit.config import ServerSettings, environment_variable
from tests.conftest import require_module

from .conftest import DEPLOY
from .kserve_schema import INFERENCE_SERVICE, SERVING_RUNTIME

kubernetes_validate = require_module("kubernetes_validate", "pip install kubernetes-validate")

K8S = DEPLOY / "k8s"
KSERVE = DEPLOY / "kserve"
HEALTH_ROUTES = {"/v2/health/live", "/v2/health/ready"}


def _documents(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def _resources() -> dict[str, dict[str, Any]]:
    """kind -> the one resource of that kind that kustomization.yaml lists."""
    kustomization = _documents(K8S / "kustomization.yaml")[0]
    found: dict[str, dict[str, Any]] = {}
    for name in kustomization["resources"]:
        for doc in _documents(K8S / name):
            assert doc["kind"] not in found
            found[doc["kind"]] = doc
    return found


def _validate(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, kubernetes_validate.latest_version(), strict=True)


def test_kustomization_lists_every_manifest() -> None:
    listed = set(_documents(K8S / "kustomization.yaml")[0]["resources"])
    assert listed == {path.name for path in K8S.glob("*.yaml")} - {"kustomization.yaml"}


@pytest.mark.parametrize("path", sorted(K8S.glob("*.yaml")), ids=lambda path: path.name)
def test_manifest_passes_the_kubernetes_schema(path: Path) -> None:
    resources = [resource for resource in _documents(path) if resource["kind"] != "Kustomization"]
    if path.name != "kustomization.yaml":
        assert resources, f"{path} holds no resource to validate"
    for resource in resources:
        _validate(resource)  # raises on a schema violation


def _setting_names(pairs: dict[str, str]) -> None:
    """Every SERVEKIT_* variable names a real setting by its current name (ServerSettings ignores unknown ones)."""
    known = {environment_variable(field) for field in ServerSettings.model_fields}
    for key in pairs:
        assert key in known, key


def test_configmap_holds_real_server_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    data = _resources()["ConfigMap"]["data"]
    _setting_names(data)
    for key, value in data.items():
        monkeypatch.setenv(key, value)
    settings = ServerSettings(repository=tmp_path)
    assert (settings.host, settings.http_port, settings.metrics_port) == ("0.0.0.0", 8000, 8002)
    assert not settings.management_enabled


def test_deployment_service_and_hpa_fit_together() -> None:
    resources = _resources()
    deployment, service, hpa = resources["Deployment"], resources["Service"], resources["HorizontalPodAutoscaler"]
    pod = deployment["spec"]["template"]
    [container] = pod["spec"]["containers"]
    assert container["envFrom"][0]["configMapRef"]["name"] == resources["ConfigMap"]["metadata"]["name"]
    data = resources["ConfigMap"]["data"]
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"http": int(data["SERVEKIT_HTTP_PORT"]), "grpc": int(data["SERVEKIT_GRPC_PORT"]),
                     "metrics": int(data["SERVEKIT_METRICS_PORT"])}
    for probe in ("livenessProbe", "readinessProbe", "startupProbe"):
        assert container[probe]["httpGet"]["path"] in HEALTH_ROUTES
        assert container[probe]["httpGet"]["port"] == "http"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert any(mount["mountPath"] == "/models" for mount in container["volumeMounts"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert set(service["spec"]["selector"].items()) <= set(pod["metadata"]["labels"].items())
    assert {port["targetPort"] for port in service["spec"]["ports"]} <= set(ports)
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])


def test_serving_runtime_matches_kserve_and_runs_servekit() -> None:
    [runtime] = _documents(KSERVE / "servingruntime.yaml")
    jsonschema.validate(runtime, SERVING_RUNTIME)
    # The containers are core Kubernetes containers: check them against the Pod schema.
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "servingruntime-containers"},
           "spec": {"containers": runtime["spec"]["containers"]}}
    _validate(pod)
    [container] = runtime["spec"]["containers"]
    assert container["name"] == "kserve-container"
    assert container["command"] == ["servekit", "serve", "/mnt/models"]  # where KServe's storage initializer writes
    env = {item["name"]: item["value"] for item in container["env"]}
    _setting_names(env)
    assert env["SERVEKIT_HTTP_PORT"] == "8080" == str(container["ports"][0]["containerPort"])
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    # REST and gRPC, as KServe's Triton runtime: gRPC on Triton's port 9000 there.
    assert runtime["spec"]["protocolVersions"] == ["v2", "grpc-v2"]
    assert env["SERVEKIT_GRPC_PORT"] == "9000"


def test_inference_service_uses_the_servekit_runtime() -> None:
    [runtime] = _documents(KSERVE / "servingruntime.yaml")
    [service] = _documents(KSERVE / "inferenceservice.yaml")
    jsonschema.validate(service, INFERENCE_SERVICE)
    model = service["spec"]["predictor"]["model"]
    assert model["runtime"] == runtime["metadata"]["name"]
    assert model["protocolVersion"] in runtime["spec"]["protocolVersions"]
    assert model["modelFormat"]["name"] in {fmt["name"] for fmt in runtime["spec"]["supportedModelFormats"]}


def test_kserve_schema_refuses_a_misspelt_field() -> None:
    [service] = _documents(KSERVE / "inferenceservice.yaml")
    service["spec"]["predictor"]["model"]["storageURI"] = service["spec"]["predictor"]["model"].pop("storageUri")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(service, INFERENCE_SERVICE)
