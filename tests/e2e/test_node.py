"""Pods really run on the one-node cluster (issue 19, first step; docs/node.md): a kubelet and
scheduler beside the real control plane, containerd + runc, a CNI bridge, and an image built
with buildah. The tier runs with ``FRAUD_NODE=1`` until the chart's own pods run on it."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.cluster import Cluster, control_plane, wait_for
from tests.e2e.node import Node, missing, node

pytestmark = pytest.mark.skipif(
    os.environ.get("FRAUD_NODE") != "1", reason="the node tier runs with FRAUD_NODE=1"
)


@pytest.fixture(scope="module")
def on_node() -> Iterator[tuple[Cluster, Node]]:
    lacking = missing()
    if lacking:
        pytest.fail(f"FRAUD_NODE=1 but this machine lacks: {', '.join(lacking)}")
    with control_plane() as cluster, node(cluster) as it:
        cluster.kubectl("create", "namespace", "pods")
        yield cluster, it


def busybox_image(it: Node, tmp_path: Path) -> str:
    rootfs = tmp_path / "busybox"
    (rootfs / "bin").mkdir(parents=True)
    (rootfs / "www").mkdir()
    (rootfs / "www" / "index.html").write_text("ok\n")
    busybox = shutil.which("busybox")
    assert busybox is not None, "apt-get install busybox-static"
    shutil.copy(busybox, rootfs / "bin" / "busybox")
    for applet in ("sh", "httpd", "touch", "cat", "true", "id"):
        (rootfs / "bin" / applet).symlink_to("busybox")
    return it.image("localhost/fraud-node/busybox:1", rootfs, {"cmd": ["/bin/sh"]})


def pod(cluster: Cluster, name: str) -> dict[str, Any]:
    return cluster.get("pod", name, "pods") or {}


def test_a_locked_down_pod_runs_its_probes_and_cannot_write_its_root(
    on_node: tuple[Cluster, Node], tmp_path: Path
) -> None:
    cluster, it = on_node
    image = busybox_image(it, tmp_path)
    # The container exits 3 (and would restart) if its root filesystem were writable; the
    # readiness probe is an HTTP GET from the kubelet into the pod's network namespace.
    script = "if touch /written 2>/dev/null; then exit 3; fi; exec httpd -f -p 8080 -h /www"
    manifest = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "locked", "namespace": "pods"},
        "spec": {
            "automountServiceAccountToken": False,
            "securityContext": {"runAsNonRoot": True, "runAsUser": 65534, "runAsGroup": 65534},
            "containers": [
                {
                    "name": "web",
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-c", script],
                    "securityContext": {
                        "readOnlyRootFilesystem": True,
                        "allowPrivilegeEscalation": False,
                        "capabilities": {"drop": ["ALL"]},
                    },
                    "readinessProbe": {"httpGet": {"path": "/", "port": 8080}, "periodSeconds": 1},
                    "livenessProbe": {"exec": {"command": ["/bin/true"]}, "periodSeconds": 2},
                }
            ],
        },
    }
    cluster.kubectl("create", "-f", "-", input_=json.dumps(manifest))

    def ready() -> bool:
        conditions = pod(cluster, "locked").get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    wait_for(ready, 120, "the pod Ready (its HTTP readiness probe answered)", every=0.5)
    status = pod(cluster, "locked")["status"]
    assert status["podIP"].startswith("10.88.")
    (container,) = status["containerStatuses"]
    assert container["restartCount"] == 0, "its root filesystem was writable"
    assert "running" in container["state"]
    cluster.kubectl("delete", "pod", "locked", "--namespace=pods", "--wait=true")
    assert pod(cluster, "locked") == {}
