"""deploy/kubernetes: every core manifest validates (strict: no unknown field) against the
Kubernetes API schemas kubernetes-validate bundles, offline; KEDA's two kinds carry only the
fields KEDA documents; and the pieces agree with each other and with the service's settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from processor.settings import Settings

ROOT = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
K8S_VERSION = "1.30.0"  # the oldest minor the cloud providers still support, 2026


def docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def resources(overlay: str) -> list[dict[str, Any]]:
    """What `kustomize build deploy/kubernetes/OVERLAY` takes in, file by file."""
    folder = ROOT / overlay
    kustomization = docs(folder / "kustomization.yaml")[0]
    found = []
    for entry in kustomization["resources"]:
        target = (folder / entry).resolve()
        if target.is_dir():
            found += resources(str(target.relative_to(ROOT)))
        else:
            found += docs(target)
    return found


def by_kind(overlay: str) -> dict[str, dict[str, Any]]:
    return {d["kind"]: d for d in resources(overlay)}


CORE = sorted(
    p.relative_to(ROOT).as_posix()
    for p in ROOT.rglob("*.yaml")
    if p.name != "kustomization.yaml" and not docs(p)[0]["apiVersion"].startswith("keda.sh/")
)


@pytest.mark.parametrize("name", CORE)
def test_each_core_manifest_is_valid_for_the_kubernetes_api(name):
    for doc in docs(ROOT / name):
        kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_a_manifest_with_a_misspelt_field_is_refused():
    deployment = by_kind("base")["Deployment"]
    deployment["spec"]["template"]["spec"]["terminationGracePeriod"] = 45
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSION, strict=True)


# The fields KEDA's documentation gives for these kinds (keda.sh/docs: ScaledObject spec,
# TriggerAuthentication, and the postgresql scaler's trigger and authentication parameters).
SCALED_OBJECT_SPEC = {
    "scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod",
    "idleReplicaCount", "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers",
}  # fmt: skip
POSTGRESQL_METADATA = {
    "query", "targetQueryValue", "activationTargetQueryValue", "connectionFromEnv", "host",
    "port", "userName", "passwordFromEnv", "dbName", "sslmode",
}  # fmt: skip
POSTGRESQL_AUTH = {"connection", "password", "host", "port", "userName", "dbName", "sslmode"}


def test_the_scaled_object_uses_only_what_keda_documents_and_targets_the_deployment():
    kinds = by_kind("keda")
    scaled, auth = kinds["ScaledObject"], kinds["TriggerAuthentication"]
    assert scaled["apiVersion"] == auth["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC
    assert spec["scaleTargetRef"]["name"] == kinds["Deployment"]["metadata"]["name"]
    assert 1 <= spec["minReplicaCount"] < spec["maxReplicaCount"]
    assert set(spec["advanced"]) <= {
        "horizontalPodAutoscalerConfig",
        "restoreToOriginalReplicaCount",
    }
    # scale-down waits at least as long as a pod needs to finish its jobs
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    grace = kinds["Deployment"]["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert behavior["scaleDown"]["stabilizationWindowSeconds"] >= grace
    (trigger,) = spec["triggers"]
    assert trigger["type"] == "postgresql" and set(trigger["metadata"]) <= POSTGRESQL_METADATA
    assert all(isinstance(v, str) for v in trigger["metadata"].values())  # KEDA reads strings
    float(trigger["metadata"]["targetQueryValue"])
    assert trigger["authenticationRef"]["name"] == auth["metadata"]["name"]
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] in POSTGRESQL_AUTH and ref["key"] == "DATABASE_URL"


def test_the_pieces_agree_with_each_other_and_with_the_settings():
    kinds = by_kind("base")
    deployment, service, config = kinds["Deployment"], kinds["Service"], kinds["ConfigMap"]
    pod = deployment["spec"]["template"]
    container = pod["spec"]["containers"][0]
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in deployment["spec"]["selector"]["matchLabels"].items())
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert all(
        labels.get(k) == v
        for k, v in kinds["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items()
    )
    # Every setting in the ConfigMap is one the service reads, with a value it accepts.
    settings = Settings.from_env(
        {
            **config["data"],
            "DATABASE_URL": "postgresql://x/y",
            "PROCESSOR_TOKEN": "k8s-Hq4wZr8Lx2Vn6Tc9Jm3Pb7Yd",
        }
    )
    grace = int(config["data"]["SHUTDOWN_GRACE"])
    assert settings.shutdown_grace == grace
    assert pod["spec"]["terminationGracePeriodSeconds"] >= grace + 5 + 5  # preStop + writes
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    # Secrets come by reference only: no manifest carries a value for one.
    secret_names = {"DATABASE_URL", "PROCESSOR_TOKEN", "SUPABASE_SERVICE_ROLE_KEY"}
    for doc in resources("keda") + resources("hpa"):
        assert doc["kind"] != "Secret"
        assert not secret_names & set(doc.get("data", {}))
    migrate = kinds["Job"]["spec"]["template"]["spec"]["containers"][0]
    assert migrate["args"] == ["processor", "migrate"]
    hpa = by_kind("hpa")["HorizontalPodAutoscaler"]
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
