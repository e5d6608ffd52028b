"""Pods really run on the one-node cluster (issue 19; docs/node.md): a kubelet, scheduler and
kube-proxy beside the real control plane, containerd + runc, a CNI bridge, the project's images
built from its own Dockerfile with buildah, and the chart installed by the real helm. The
scorers decide transactions from the mock Kafka cluster, reached through the bridge."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest
import yaml
from fraud_devtools.mock_cluster import MockCluster
from fraud_scorer.model import artifact_digest
from fraud_training.synth import SynthConfig, generate

from tests.e2e.cluster import Cluster, wait_for
from tests.e2e.node import GATEWAY, Node, missing, one_node_cluster
from tests.integration.harness import produce, read_topic, stream

ROOT = Path(__file__).resolve().parents[2]
HELM = Path.home() / ".cache/fraud-detector/helm-3.17.3/helm"
NS, OPERATOR_NS = "shop", "fraud-system"
TOPICS = {"input": "tx", "decisions": "decisions", "alerts": "alerts", "deadLetter": "dlq"}

pytestmark = pytest.mark.skipif(
    os.environ.get("FRAUD_NODE") != "1", reason="the node tier runs with FRAUD_NODE=1"
)


@pytest.fixture(scope="module")
def on_node() -> Iterator[tuple[Cluster, Node]]:
    lacking = missing()
    if lacking:
        pytest.fail(f"FRAUD_NODE=1 but this machine lacks: {', '.join(lacking)}")
    with one_node_cluster() as (cluster, it):
        cluster.kubectl("create", "namespace", "pods")
        cluster.kubectl("create", "namespace", NS)
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


@pytest.fixture(scope="module")
def images(on_node: tuple[Cluster, Node]) -> None:
    """The scorer and operator images, built from the Dockerfile as a user would (on a Debian
    base made here: docs/node.md) and imported into the node."""
    _, it = on_node
    built = subprocess.run(
        [str(ROOT / "scripts/build-images.sh"), "scorer", "operator"],
        env={**os.environ, "IMAGE_BUILDER": "buildah", "OCI_DIR": str(it.work / "images")},
        capture_output=True,
        text=True,
        timeout=1200,
        check=False,
    )
    assert built.returncode == 0, built.stderr[-4000:]
    for archive in built.stdout.split():
        it.import_image(Path(archive))


@pytest.fixture(scope="module")
def kafka(on_node: tuple[Cluster, Node]) -> Iterator[MockCluster]:
    """The mock cluster, advertised at the bridge's address (forwarded to its loopback ports),
    so the pods and the tests use the same bootstrap servers."""
    _, it = on_node
    with MockCluster() as mc:
        for topic in TOPICS.values():
            mc.create_topic(topic, 4)
        for address in mc.bootstrap_servers.split(","):
            it.expose(int(address.rsplit(":", 1)[1]))
        mc.advertise(GATEWAY)
        yield mc


@pytest.fixture(scope="module")
def chart(on_node: tuple[Cluster, Node], images: None) -> None:
    """The chart as make kind-up installs it (values-kind.yaml), by the real helm, waiting for
    the operator's pod to be Ready. No Prometheus Operator here: no monitors, rules or dashboard."""
    cluster, _ = on_node
    installed = subprocess.run(
        [
            str(HELM),
            "install",
            "fraud-detector",
            str(ROOT / "charts/fraud-detector"),
            f"--kubeconfig={cluster.admin_kubeconfig}",
            f"--namespace={OPERATOR_NS}",
            "--create-namespace",
            "--values",
            str(ROOT / "charts/fraud-detector/values-kind.yaml"),
            "--set",
            "monitoring.serviceMonitor.enabled=false,monitoring.prometheusRule.enabled=false,"
            "monitoring.dashboard.enabled=false,operator.prometheusUrl=",
            "--wait",
            "--timeout=5m",
        ],
        capture_output=True,
        text=True,
        timeout=400,
        check=False,
    )
    assert installed.returncode == 0, installed.stderr + _describe(cluster, OPERATOR_NS)


@pytest.fixture(scope="module")
def model_server(on_node: tuple[Cluster, Node], images: None, model_dir: Path) -> str:
    """examples/kind-model-server.yaml serving the trained model from a ConfigMap; its URI by
    the Service's cluster IP (kube-proxy), as the node has no cluster DNS."""
    cluster, _ = on_node
    cluster.kubectl(
        "create", "configmap", "model-kind-1", f"--namespace={NS}", f"--from-file={model_dir}"
    )
    cluster.kubectl("apply", "--validate=false", f"--namespace={NS}", "-f",
                    str(ROOT / "examples/kind-model-server.yaml"))  # fmt: skip
    service = cluster.get("service", "model-server", NS)
    assert service is not None
    return f"http://{service['spec']['clusterIP']}:8000/"


def _describe(cluster: Cluster, namespace: str) -> str:
    """What a failing wait needs: the pods, their events and their logs."""
    out = [cluster.kubectl("get", "pods,events", f"--namespace={namespace}", "-o", "wide",
                           check=False).stdout]  # fmt: skip
    pods = cluster.kubectl("get", "pods", f"--namespace={namespace}", "-o", "name", check=False)
    for name in pods.stdout.split():
        logs = cluster.kubectl("logs", name, f"--namespace={namespace}", "--all-containers",
                               "--tail=30", check=False)  # fmt: skip
        out.append(f"--- {name}\n{logs.stdout}{logs.stderr}")
    return "\n".join(out)


def _detector(name: str, kafka: MockCluster, model_uri: str, model_dir: Path) -> dict[str, Any]:
    """examples/minimal.yaml with this cluster's Kafka and model."""
    fd: dict[str, Any] = yaml.safe_load((ROOT / "examples/minimal.yaml").read_text())
    fd["metadata"] = {"name": name, "namespace": NS}
    fd["spec"]["kafka"]["bootstrapServers"] = kafka.bootstrap_servers
    fd["spec"]["topics"] = TOPICS
    manifest = json.loads((model_dir / "manifest.json").read_text())
    fd["spec"]["model"].update(
        version=manifest["version"], uri=model_uri, digest=artifact_digest(model_dir)
    )
    fd["spec"]["scaling"] = {"minReplicas": 1, "maxReplicas": 2}
    return fd


def _ready_pods(cluster: Cluster, selector: str) -> list[dict[str, Any]]:
    out = cluster.kubectl("get", "pods", f"--namespace={NS}", "-l", selector, "-o", "json")
    return [
        p
        for p in json.loads(out.stdout)["items"]
        if p["metadata"].get("deletionTimestamp") is None
        and any(
            c["type"] == "Ready" and c["status"] == "True"
            for c in p["status"].get("conditions") or []
        )
    ]


def _decided(kafka: MockCluster) -> dict[str, int]:
    out: dict[str, int] = {}
    for record in read_topic(kafka.bootstrap_servers, TOPICS["decisions"]):
        tid = msgspec.json.decode(record.value)["transaction_id"]
        out[tid] = out.get(tid, 0) + 1
    return out


def test_the_chart_runs_the_operator_and_a_detector_decides_transactions_in_pods(
    on_node: tuple[Cluster, Node],
    chart: None,
    kafka: MockCluster,
    model_server: str,
    model_dir: Path,
) -> None:
    cluster, _ = on_node
    # The operator runs as the chart's pod, with the chart's ServiceAccount and RBAC.
    operator_pods = json.loads(
        cluster.kubectl("get", "pods", f"--namespace={OPERATOR_NS}", "-o", "json").stdout
    )["items"]
    assert [p["spec"]["serviceAccountName"] for p in operator_pods] == ["fraud-detector-operator"]

    cluster.apply(_detector("retail", kafka, model_server, model_dir))
    selector = "app.kubernetes.io/instance=retail,app.kubernetes.io/component=scorer"

    def ready() -> bool:
        fd = cluster.get("frauddetector", "retail", NS) or {}
        conditions = fd.get("status", {}).get("conditions") or []
        return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)

    try:
        wait_for(ready, 300, "FraudDetector retail Ready=True", every=1)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{_describe(cluster, NS)}") from None
    (pod,) = _ready_pods(cluster, selector)
    # The model came through the init container from the model server, pinned by digest.
    (fetch,) = pod["status"]["initContainerStatuses"]
    assert fetch["state"]["terminated"]["exitCode"] == 0
    assert pod["spec"]["containers"][0]["securityContext"]["readOnlyRootFilesystem"] is True
    row = cluster.kubectl("get", "fd", "retail", f"--namespace={NS}", "--no-headers").stdout
    assert row.split()[1:2] == ["True"] and row.split()[5] == "1", row

    # Transactions produced to Kafka are decided by the pods, each exactly once.
    frame = generate(SynthConfig(users=200, days=1.0, seed=11))
    items = stream(frame)
    produce(kafka.bootstrap_servers, TOPICS["input"], items)
    ids = {msgspec.json.decode(value)["transaction_id"] for _, value in items}
    decided = wait_for(
        lambda: (d := _decided(kafka)) and set(d) >= ids and d, 180, "every transaction decided"
    )
    assert set(decided) == ids and set(decided.values()) == {1}
