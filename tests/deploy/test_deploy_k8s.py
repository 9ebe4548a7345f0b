"""Kubernetes manifests (deploy/k8s/): parsed and checked without a cluster.

The kustomization lists every manifest, the router Deployment has probes, a non-root read-only
container and a drain longer than the router's grace, the policy ConfigMap validates, is
mounted so updates are seen, and reaches Ollama off the pod, Service and PodDisruptionBudget
select the router pods, and the Secret template holds placeholders only.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

import yaml

from router.policy.loader import parse_policy
from router.settings import RouterSettings
from tests.deploy.deploy_helpers import K8S, LOOPBACK, RUN_AS_UID, assert_pinned, docs


def k8s_objects() -> list[dict[str, Any]]:
    return [d for p in sorted(K8S.glob("*.yaml")) if p.name != "kustomization.yaml"
            for d in docs(p)]


def k8s(kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in k8s_objects()
            if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


def router_deployment() -> dict[str, Any]:
    return k8s("Deployment", "hybrid-router")[0]


# ----------------------------------------------------------------------------------- kubernetes


def test_kustomization_lists_every_manifest_but_the_secret_template() -> None:
    kustom = docs(K8S / "kustomization.yaml")[0]
    listed = set(kustom["resources"])
    assert all((K8S / r).is_file() for r in listed)
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == on_disk - {"secret.yaml"}


def test_deployment_probes_security_and_drain() -> None:
    dep = router_deployment()
    spec = dep["spec"]
    pod = spec["template"]["spec"]
    (c,) = pod["containers"]
    assert spec["replicas"] >= 2
    assert_pinned(c["image"])
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 11435}
    for probe, path in (("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")):
        get = c[probe]["httpGet"]
        assert get["path"] == path and ports.get(get["port"], get["port"]) == 11435
    psc, csc = pod["securityContext"], c["securityContext"]
    assert psc.get("runAsNonRoot") or csc.get("runAsNonRoot")
    assert csc.get("runAsUser", psc.get("runAsUser")) == RUN_AS_UID
    assert csc["readOnlyRootFilesystem"] is True and csc["allowPrivilegeEscalation"] is False
    assert csc["capabilities"]["drop"] == ["ALL"]
    assert {"cpu", "memory"} <= set(c["resources"]["requests"]) and c["resources"]["limits"]
    env = k8s("ConfigMap", "hybrid-router-env")[0]["data"]
    grace = float(env.get("ROUTER_GRACE_S", RouterSettings().grace_s))
    pre_stop = c["lifecycle"]["preStop"]["exec"]["command"]
    assert pod["terminationGracePeriodSeconds"] > grace + (float(pre_stop[-1]) if pre_stop[0] ==
                                                            "sleep" else 0)
    refs = [e.get("configMapRef") or e.get("secretRef") for e in c["envFrom"]]
    assert k8s("ConfigMap", refs[0]["name"]) and all(
        r.get("optional") or k8s("ConfigMap", r["name"]) for r in refs[1:])


def test_deployment_mounts_the_policy_configmap() -> None:
    pod = router_deployment()["spec"]["template"]["spec"]
    mounts = {m["name"]: m for m in pod["containers"][0]["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    policy_mount = next(m for m in mounts.values()
                        if m["mountPath"] == "/etc/hybrid-router/policies")
    assert "subPath" not in policy_mount, "subPath mounts never see ConfigMap updates"
    cm_name = volumes[policy_mount["name"]]["configMap"]["name"]
    policy_file = k8s("ConfigMap", "hybrid-router-env")[0]["data"]["ROUTER_POLICY_FILE"]
    key = policy_file.removeprefix("/etc/hybrid-router/policies/")
    assert key in k8s("ConfigMap", cm_name)[0]["data"]
    audit = k8s("ConfigMap", "hybrid-router-env")[0]["data"].get("ROUTER_AUDIT_LOG")
    if audit:  # a read-only root filesystem: the audit folder must be a volume
        assert any(audit.startswith(m["mountPath"] + "/") for m in mounts.values())


def test_configmap_policy_validates_and_reaches_ollama_in_cluster() -> None:
    policies = [parse_policy(yaml.safe_load(text), f"{cm['metadata']['name']}/{key}")
                for cm in k8s("ConfigMap") for key, text in cm.get("data", {}).items()
                if key.endswith((".yaml", ".yml"))]
    assert policies, "no policy in any ConfigMap"
    for policy in policies:
        local = [b for b in policy.backends.values() if b.type == "ollama"]
        assert local
        for backend in local:
            assert urlsplit(backend.base_url).hostname not in LOOPBACK, "a pod is not the GPU host"
            assert backend.gpu_memory_gb, "no NVML in the router pod: declare the card"


def test_redis_url_points_at_the_redis_service() -> None:
    url = urlsplit(k8s("ConfigMap", "hybrid-router-env")[0]["data"]["ROUTER_REDIS_URL"])
    (svc,) = k8s("Service", url.hostname)
    assert url.port in [p["port"] for p in svc["spec"]["ports"]]


def test_service_and_pdb_select_the_router_pods() -> None:
    dep = router_deployment()
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (svc,) = k8s("Service", "hybrid-router")
    assert svc["spec"]["type"] == "ClusterIP"
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] in ("http", 11435)
    (pdb,) = k8s("PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] >= 1
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_every_workload_is_pinned_and_unprivileged() -> None:
    for dep in k8s("Deployment"):
        pod = dep["spec"]["template"]["spec"]
        for c in pod["containers"]:
            assert_pinned(c["image"])
            csc = c.get("securityContext", {})
            assert pod["securityContext"].get("runAsNonRoot") or csc.get("runAsNonRoot")
            assert csc.get("allowPrivilegeEscalation") is False
            assert csc.get("capabilities", {}).get("drop") == ["ALL"]
            assert c.get("readinessProbe") and c.get("livenessProbe")


def test_secret_template_holds_placeholders_only() -> None:
    (secret,) = k8s("Secret")
    values = {**secret.get("stringData", {}), **secret.get("data", {})}
    assert values and all(v == "REPLACE_ME" for v in values.values())
