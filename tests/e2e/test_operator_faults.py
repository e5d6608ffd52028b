"""The operator while the API server misbehaves: writes failing with 500s and 409s, watches
cut every few seconds, the API server away for 10 s. Whatever happens in between, the
children converge to the last spec, none is duplicated or orphaned, and the operator never
crashes."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml
from fraud_devtools.mock_cluster import MockCluster

from tests.e2e.cluster import Cluster, wait_for
from tests.e2e.faults import FaultyApiProxy
from tests.e2e.test_operator import (  # noqa: F401 - module fixtures, one control plane here
    NS,
    OPERATOR,
    OPERATOR_NS,
    _get,
    cluster,
    condition,
    detector,
    kafka,
    keep_log,
    operator_command,
)
from tests.servers import free_port

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def proxy(cluster: Cluster) -> Iterator[FaultyApiProxy]:  # noqa: F811
    p = FaultyApiProxy(cluster.server, cluster.ca_file).start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def faulty_operator(cluster: Cluster, proxy: FaultyApiProxy) -> Iterator[dict[str, Any]]:  # noqa: F811
    """The operator, with its own ServiceAccount's token, talking through the proxy."""
    direct = yaml.safe_load(cluster.service_account_kubeconfig(OPERATOR_NS, OPERATOR).read_text())
    token = direct["users"][0]["user"]["token"]
    config = cluster.workdir / "faulty.kubeconfig"
    config.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "proxy", "cluster": {"server": proxy.url}}],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "p", "context": {"cluster": "proxy", "user": "u"}}],
                "current-context": "p",
            }
        )
    )
    port, health = free_port(), free_port()
    log_path = cluster.workdir / "operator-faults.log"  # kept apart from the main e2e's log
    env = {**os.environ, "KUBECONFIG": str(config), "FRAUD_OPERATOR_RESYNC_SECONDS": "3"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            operator_command(100, port, health), env=env, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        wait_for(lambda: _get(f"http://127.0.0.1:{port}/metrics"), 30, "operator metrics")
        yield {"proc": proc, "metrics": f"http://127.0.0.1:{port}/metrics", "log": log_path}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
            keep_log(log_path)


def owned(c: Cluster, kind: str, instance: str) -> list[dict[str, Any]]:
    out = c.kubectl(
        "get",
        kind,
        f"--namespace={NS}",
        "-l",
        f"app.kubernetes.io/instance={instance}",
        "-o",
        "yaml",
    ).stdout
    return list(yaml.safe_load(out)["items"])


def test_children_converge_through_api_errors_cut_watches_and_an_outage(
    cluster: Cluster,  # noqa: F811
    kafka: MockCluster,  # noqa: F811
    proxy: FaultyApiProxy,
    faulty_operator: dict[str, Any],
) -> None:
    proxy.write_failure_every = 3  # one write in three fails: 500, then 409, then 500...
    proxy.cut_watches_after_s = 4
    spec = {"scaling": {"minReplicas": 1, "maxReplicas": 2}}
    cluster.apply(detector("chaos", kafka.bootstrap_servers, **spec))
    wait_for(lambda: cluster.get("deployment", "chaos-scorer", NS), 60, "the Deployment")

    # Edits while the faults go on: rules, scaling, a child deleted by hand.
    for i, rule in enumerate(("tx.amount > 2000.0", "tx.amount > 3000.0", "tx.amount > 4000.0")):
        cluster.apply(
            detector(
                "chaos",
                kafka.bootstrap_servers,
                rules=[{"name": "big", "expression": rule, "action": "review"}],
                scaling={"minReplicas": 1, "maxReplicas": 2 + i},
            )
        )
        time.sleep(2)
        if i == 1:
            cluster.kubectl("delete", "configmap", "chaos-scorer-config", f"--namespace={NS}")
            proxy.outage(10)  # the API server "restarts" right after
    time.sleep(10)  # the outage
    wait_for(lambda: proxy.injected["watch-cut"] >= 2, 30, "watches cut after the outage too")
    assert faulty_operator["proc"].poll() is None, "the operator crashed"
    assert proxy.injected["500"] and proxy.injected["409"] and proxy.injected["503"]

    # Faults off: everything converges to the last spec, with no duplicates.
    proxy.heal()

    def converged() -> bool:
        config = cluster.get("configmap", "chaos-scorer-config", NS)
        hpa = cluster.get("horizontalpodautoscalers.v2beta2.autoscaling", "chaos-scorer", NS)
        fd = cluster.get("frauddetector", "chaos", NS) or {}
        status = fd.get("status") or {}
        ready = next((c for c in status.get("conditions") or [] if c["type"] == "Ready"), {})
        # A pass that began before the faults stopped may still report the write it lost
        # (ApplyFailed): converged means a whole pass has succeeded since.
        return bool(
            config
            and "tx.amount > 4000.0" in config["data"]["scorer.yaml"]
            and hpa
            and hpa["spec"]["maxReplicas"] == 4
            and status.get("observedGeneration") == fd["metadata"]["generation"]
            and ready.get("reason") == "ReplicasNotReady"
        )

    healed = time.monotonic()
    wait_for(converged, 90, "convergence to the last spec")
    took = time.monotonic() - healed
    assert [d["metadata"]["name"] for d in owned(cluster, "deployments", "chaos")] == [
        "chaos-scorer"
    ]
    assert sorted(c["metadata"]["name"] for c in owned(cluster, "configmaps", "chaos")) == [
        "chaos-scorer-config"
    ]
    # Rule edits are hot-reloaded, so however many times the writes were retried, the pod
    # template never changed: one ReplicaSet.
    assert len(owned(cluster, "replicasets", "chaos")) == 1
    ready = condition(cluster, "chaos", "Ready")
    assert ready is not None and ready["reason"] == "ReplicasNotReady"  # no kubelet here
    assert faulty_operator["proc"].poll() is None
    print(f"\ninjected: {dict(proxy.injected)}; converged {took:.1f} s after the faults stopped")
    cluster.kubectl("delete", "frauddetector", "chaos", f"--namespace={NS}", "--wait=true")
