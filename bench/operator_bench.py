"""The operator at scale (issue 20): N FraudDetectors on a real API server (kube-apiserver and
controller manager v1.20.2, as the e2e tests run them), the operator started cold as the chart
runs it (its ServiceAccount, the chart's RBAC), with the detectors' Kafka unreachable (so no
scorer traffic; nothing else changes).

For each size: the time until every detector has a status (from the operator's start), and
until the operator goes quiet (the follow-up passes that child events bring are done, which
waits on the controller manager's 20 requests a second: at most one API request in 15 s), the
operator's CPU over an idle window after that, its peak RSS (VmHWM),
handler errors in its log, and the API requests its ServiceAccount made per detector per minute
in the idle window (from the API server's audit log). For the start (until quiet): the
operator's and the control plane's CPU-seconds and the operator's requests per detector, by
verb. Writes ``build/bench-operator.json``.

    python bench/operator_bench.py [--sizes 10,100,1000] [--idle 60]
"""

from __future__ import annotations

import argparse
import json
import os
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml
from fraud_devtools.local import free_port

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.cluster import (  # noqa: E402
    ADMIN_TOKEN,
    Cluster,
    chart_manifests,
    control_plane,
    is_request,
    wait_for,
)

OPERATOR_NS, OPERATOR, NS = "fraud-system", "fraud-detector-operator", "bench"
TICK = os.sysconf("SC_CLK_TCK")


def chart(cluster: Cluster) -> None:
    cluster.kubectl("create", "namespace", OPERATOR_NS)
    for doc in chart_manifests("fraud-detector", OPERATOR_NS):
        cluster_scoped = doc["kind"] in ("CustomResourceDefinition", "ClusterRole",
                                         "ClusterRoleBinding")  # fmt: skip
        cluster.apply(doc, namespace=None if cluster_scoped else OPERATOR_NS)
    cluster.kubectl("create", "namespace", NS)


def detector(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "frauddetection.io/v1alpha1",
        "kind": "FraudDetector",
        "metadata": {"name": f"fd-{i:04d}", "namespace": NS},
        "spec": {
            "kafka": {"bootstrapServers": "127.0.0.1:9"},  # nothing listens there
            "topics": {"input": "tx", "decisions": "dec", "alerts": "alerts", "deadLetter": "dlq"},
            "model": {
                "version": "m1",
                "uri": "https://models.example/m1/",
                "digest": "sha256:" + "a" * 64,
            },
            "rules": [{"name": "big", "expression": "tx.amount > 1000.0"}],
            "scaling": {"minReplicas": 1, "maxReplicas": 3},
        },
    }


def detectors(n: int) -> str:
    return yaml.safe_dump_all([detector(i) for i in range(n)])


class StatusWatch:
    """The detectors that have a status, from one watch on the API server (a thread). Polling
    ``kubectl get -o json`` each second listed and re-encoded every detector each time: about
    a third of a core taken from the system under measurement at 1,000 detectors."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.with_status: set[str] = set()
        self._stop = threading.Event()
        self._stream: Any = None
        self._thread = threading.Thread(target=self._run, name="status-watch", daemon=True)
        self._thread.start()

    def count(self) -> int:
        return len(self.with_status)

    def stop(self) -> None:
        self._stop.set()
        if self._stream is not None:
            self._stream.close()

    def _run(self) -> None:
        context = ssl.create_default_context(cafile=str(self.cluster.ca_file))
        url = (f"{self.cluster.server}/apis/frauddetection.io/v1alpha1/namespaces/{NS}"
               "/frauddetectors?watch=1&timeoutSeconds=60")  # fmt: skip
        while not self._stop.is_set():
            auth = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
            try:
                request = urllib.request.Request(url, headers=auth)
                with urllib.request.urlopen(request, context=context, timeout=70) as stream:
                    self._stream = stream
                    for line in stream:
                        obj = json.loads(line)["object"]
                        if (obj.get("status") or {}).get("conditions"):
                            self.with_status.add(obj["metadata"]["name"])
                        if self._stop.is_set():
                            return
            except Exception:  # the stream ended, failed, or stop() closed it
                time.sleep(0.5)


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime, every thread


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def control_plane_cpu_seconds(cluster: Cluster) -> dict[str, float]:
    """CPU-seconds so far of etcd, the API server and the controller manager (every process
    whose command line names the cluster's work directory), by program."""
    out: dict[str, float] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
            if str(cluster.workdir) in cmdline:
                program = Path(cmdline.split("\0")[0]).name
                out[program] = out.get(program, 0.0) + cpu_seconds(int(proc.name))
        except OSError:  # gone meanwhile
            continue
    return out


def by_verb(events: list[dict[str, Any]], top: int = 10) -> dict[str, int]:
    counts: dict[str, int] = {}
    for event in events:
        ref = event.get("objectRef") or {}
        key = f"{event['verb']} {ref.get('resource', '?')}"
        if ref.get("subresource"):
            key += f"/{ref['subresource']}"
        counts[key] = counts.get(key, 0) + 1
    return dict(sorted(counts.items(), key=lambda kv: -kv[1])[:top])


class OperatorRequests:
    """The operator's requests from the API server's audit log, read on from where the last
    call stopped (the whole log parsed every second took a core of its own by the end)."""

    def __init__(self, cluster: Cluster) -> None:
        self.log = cluster.audit_log
        self.user = f"system:serviceaccount:{OPERATOR_NS}:{OPERATOR}"
        self.events: list[tuple[float, dict[str, Any]]] = []
        self._offset = 0

    def between(self, start: float, end: float) -> list[dict[str, Any]]:
        self._read()
        return [event for at, event in self.events if start <= at < end]

    def _read(self) -> None:
        if not self.log.exists():
            return
        with self.log.open("rb") as f:
            f.seek(self._offset)
            for line in f:
                if not line.endswith(b"\n"):  # being written: read it next time
                    break
                self._offset += len(line)
                if self.user.encode() not in line:
                    continue
                event = json.loads(line)
                if is_request(event) and event["user"]["username"] == self.user:
                    received = event["requestReceivedTimestamp"].replace("Z", "+00:00")
                    self.events.append((datetime.fromisoformat(received).timestamp(), event))


def measure(n: int, idle_s: float, limit_s: float, work: Path) -> dict[str, Any]:
    with control_plane() as cluster:
        chart(cluster)
        cluster.kubectl("create", "-f", "-", input_=detectors(n))
        kubeconfig = cluster.service_account_kubeconfig(OPERATOR_NS, OPERATOR)
        log_path = work / f"bench-operator-{n}.log"
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        env.pop("FRAUD_OPERATOR_RESYNC_SECONDS", None)  # as deployed
        with log_path.open("wb") as log:
            started, started_wall = time.monotonic(), time.time()
            plane0 = control_plane_cpu_seconds(cluster)
            proc = subprocess.Popen(
                [sys.executable, "-m", "fraud_operator", "--peering", OPERATOR,
                 "--metrics-host", "127.0.0.1", "--metrics-port", str(free_port()),
                 "--health-port", str(free_port())],
                env=env, stdout=log, stderr=subprocess.STDOUT,
            )  # fmt: skip
        statuses, requests = StatusWatch(cluster), OperatorRequests(cluster)
        try:
            reached = True
            try:
                wait_for(lambda: statuses.count() >= n, limit_s, f"{n} statuses", every=0.2)
            except AssertionError:
                reached = False
            reconciled_s = time.monotonic() - started

            def quiet() -> bool:  # at most one request in 15 s (the log lags ~2 s)
                now = time.time()
                return len(requests.between(now - 17, now - 2)) <= 1

            try:
                wait_for(quiet, limit_s, "the operator to go quiet", every=1.0)
            except AssertionError:
                reached = False
            settled_s = time.monotonic() - started - 17
            cpu0, t0, wall0 = cpu_seconds(proc.pid), time.monotonic(), time.time()
            plane1 = control_plane_cpu_seconds(cluster)
            time.sleep(idle_s)
            cpu1, t1, wall1 = cpu_seconds(proc.pid), time.monotonic(), time.time()
            rss = peak_rss_mib(proc.pid)
        finally:
            statuses.stop()
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        time.sleep(1)  # the audit log's last lines
        idle_requests = requests.between(wall0, wall1)
        start_requests = requests.between(started_wall, wall0)
        lines = [json.loads(x) for x in log_path.read_text().splitlines() if x.startswith("{")]
        errors = [x["message"] for x in lines if x.get("severity") in ("error", "critical")]
        minutes = (t1 - t0) / 60
        return {
            "detectors": n,
            "all_reconciled": reached,
            "reconciled_s": round(reconciled_s, 1),
            "settled_s": round(settled_s, 1),
            "start_operator_cpu_s": round(cpu0, 1),
            "start_control_plane_cpu_s": {
                k: round(v - plane0.get(k, 0.0), 1) for k, v in sorted(plane1.items())
            },
            "start_requests_per_detector": round(len(start_requests) / n, 1),
            "start_requests_by_verb": by_verb(start_requests),
            "idle_cpu_share_of_a_core": round((cpu1 - cpu0) / (t1 - t0), 4),
            "idle_window_s": round(t1 - t0, 1),
            "peak_rss_mib": round(rss, 1),
            "handler_errors": len(errors),
            "first_errors": sorted(set(errors))[:5],
            "idle_requests_per_detector_per_minute": round(len(idle_requests) / n / minutes, 3),
            "idle_requests_by_verb": by_verb(idle_requests),
        }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--idle", type=float, default=60.0, help="idle window, seconds")
    parser.add_argument(
        "--limit", type=float, default=600.0, help="stop waiting for all statuses after this"
    )
    parser.add_argument("--out", type=Path, default=ROOT / "build/bench-operator.json")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    results = []
    for n in (int(s) for s in args.sizes.split(",")):
        result = measure(n, args.idle, args.limit, args.out.parent)
        print(json.dumps(result), flush=True)
        results.append(result)
    args.out.write_text(json.dumps({"sizes": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
