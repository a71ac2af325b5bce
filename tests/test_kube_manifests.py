"""deploy/kubernetes: schema-valid offline (kubernetes-validate), accepted by the real
apiserver (server-side dry run of the kustomization), and its RBAC is enough for the
agent and no more (the agent runs as the ServiceAccount, by impersonation)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from corral.agent.config import settings_from
from corral.kube import annotations as ann
from corral.kube import nrt
from corral.kube.config import kube_settings
from tests.kube_agent import (
    AgentProcess,
    annotations_of,
    create_pods,
    get_or_none,
    list_pods,
    pod_body,
    wait_for,
)
from tests.kube_plane import KubePlane

DEPLOY = Path(__file__).resolve().parent.parent / "deploy" / "kubernetes"
KUSTOMIZATION = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())
SA = "system:serviceaccount:corral-system:corral-agent"


def _documents() -> list[tuple[str, dict[str, Any]]]:
    docs = []
    for name in KUSTOMIZATION["resources"]:
        for doc in yaml.safe_load_all((DEPLOY / name).read_text()):
            if doc:
                docs.append((name, doc))
    return docs


@pytest.mark.parametrize(
    ("name", "doc"), _documents(), ids=lambda v: v if isinstance(v, str) else v["kind"]
)
def test_every_resource_is_schema_valid(name: str, doc: dict[str, Any]) -> None:
    kubernetes_validate.validate(doc, kubernetes_validate.latest_version(), strict=True)


def test_the_validator_catches_a_broken_daemonset() -> None:
    ds = next(d for _, d in _documents() if d["kind"] == "DaemonSet")
    broken = copy.deepcopy(ds)
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = "api"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, kubernetes_validate.latest_version(), strict=True)
    unknown = copy.deepcopy(ds)
    unknown["spec"]["template"]["spec"]["containers"][0]["privilegd"] = True
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(unknown, kubernetes_validate.latest_version(), strict=True)


def test_the_configmap_holds_valid_agent_settings() -> None:
    cm = next(d for _, d in _documents() if d["kind"] == "ConfigMap")
    data = yaml.safe_load(cm["data"]["agent.yaml"])
    settings = settings_from(data)
    kube = kube_settings(settings.kube, {"node_name": "n"})
    assert kube.kubelet_root == Path("/var/lib/kubelet")
    ds = next(d for _, d in _documents() if d["kind"] == "DaemonSet")
    pod = ds["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    assert pod["containers"][0]["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["containers"][0]["securityContext"]["privileged"] is True


@pytest.mark.slow
def test_server_side_dry_run_and_rbac_on_the_real_apiserver(
    kube_plane: KubePlane, tmp_path: Path
) -> None:
    kube_plane.ensure_namespace("corral-system")
    # The test plane's apiserver runs without --allow-privileged (its default); every real
    # cluster (kubeadm, managed ones) allows privileged pods, which a node agent needs.
    if "--allow-privileged=true" not in kube_plane.apiserver_args():
        kube_plane.restart_apiserver(0.2, extra_args=("--allow-privileged=true",))
    out = kube_plane.kubectl("apply", "--server-side", "--dry-run=server", "-k", str(DEPLOY))
    for kind in (
        "customresourcedefinition",
        "serviceaccount",
        "clusterrole",
        "clusterrolebinding",
        "configmap",
        "daemonset",
        "secret",
    ):
        assert kind in out.lower(), out
    # For real: the ServiceAccount and its RBAC (the DaemonSet cannot run: no kubelet).
    for name in ("serviceaccount.yaml", "rbac.yaml"):
        kube_plane.kubectl("apply", "-f", str(DEPLOY / name))
    checks = {
        "patch pods": ["patch", "pods"],
        "create pods/eviction": ["create", "pods", "--subresource=eviction"],
        "patch nodes/status": ["patch", "nodes", "--subresource=status"],
        "create nrt": ["create", "noderesourcetopologies.topology.node.k8s.io"],
        "create events": ["create", "events"],
        "delete pods": ["delete", "pods"],
        "create pods": ["create", "pods"],
        "patch nodes": ["patch", "nodes"],
        "get secrets": ["get", "secrets"],
    }
    allowed = sorted(
        what
        for what, args in checks.items()
        if kube_plane.kubectl("auth", "can-i", *args, "--as", SA, check=False)
        .strip()
        .startswith("yes")
    )
    assert allowed == sorted(
        ["patch pods", "create pods/eviction", "patch nodes/status", "create nrt", "create events"]
    )
    # The agent, acting as the ServiceAccount, does its whole job with these rights.
    node = "rbac-node"
    kube_plane.create_node(node, cpu="256", memory="512Gi")
    config = yaml.safe_load(kube_plane.kubeconfig.read_text())
    config["users"][0]["user"]["as"] = SA
    as_sa = tmp_path / "as-sa.kubeconfig"
    as_sa.write_text(yaml.safe_dump(config))
    agent = AgentProcess(kube_plane, node, tmp_path, kubeconfig=as_sa)
    agent.start()
    try:
        create_pods(
            kube_plane,
            [
                pod_body("rbac-g", node, cpu="2", memory="1Gi", guaranteed=True),
                pod_body("rbac-bad", node, cpu="1", annotations={ann.QOS: "gold"}),
            ],
        )
        wait_for(
            "pods annotated by the ServiceAccount",
            lambda: (
                all(ann.CPUSET in a for k, a in annotations_of(list_pods(kube_plane, node)).items())
                and len(list_pods(kube_plane, node)) == 2
            ),
        )
        wait_for(
            "the NRT written by the ServiceAccount",
            lambda: get_or_none(kube_plane, f"{nrt.PATH}/{node}"),
        )
        wait_for(
            "batch resources on the node",
            lambda: (
                ann.BATCH_CPU
                in kube_plane.request("GET", f"/api/v1/nodes/{node}")["status"]["allocatable"]
            ),
        )
        assert "Forbidden" not in agent.log_text()  # ApiError: "403 Forbidden: ..."
    finally:
        agent.stop()
