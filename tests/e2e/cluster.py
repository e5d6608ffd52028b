"""A real Kubernetes control plane for end-to-end tests: etcd, kube-apiserver and
kube-controller-manager v1.20.2 (built by ``scripts/build-kube.sh`` and cached under
``~/.cache/fraud-detector``), on 127.0.0.1, with token authentication and RBAC on.

There is no kubelet or scheduler: Deployments get ReplicaSets and Pods objects (the controller
manager runs), garbage collection deletes children with their owner, but no pod ever runs.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from tests.servers import free_port

KUBE_BIN = (
    Path(os.environ.get("FRAUD_KUBE_CACHE", Path.home() / ".cache/fraud-detector/kube-1.20.2"))
    / "bin"
)
ADMIN_TOKEN = "e2e-admin-token"
HELM = Path.home() / ".cache/fraud-detector/helm-3.17.3/helm"  # scripts/get_helm.py puts it there


def wait_for(predicate: Callable[[], Any], timeout: float, what: str, every: float = 0.2) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail with ``what`` at the deadline."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


def is_ready(obj: dict[str, Any] | None) -> bool:
    """Whether an object (a pod, a node, a FraudDetector) has condition Ready=True."""
    conditions = (obj or {}).get("status", {}).get("conditions") or []
    return any(c["type"] == "Ready" and c["status"] == "True" for c in conditions)


def is_request(event: dict[str, Any]) -> bool:
    """An audit event that counts as one request: a finished one, or a watch once it started
    (a watch completes only when it ends)."""
    stage = event.get("stage")
    return stage == "ResponseComplete" or (
        stage == "ResponseStarted" and event.get("verb") == "watch"
    )


def kubeconfig(server: str, ca_file: Path, token: str, path: Path) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [
                    {
                        "name": "e2e",
                        "cluster": {"server": server, "certificate-authority": str(ca_file)},
                    }
                ],
                "users": [{"name": "u", "user": {"token": token}}],
                "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "u"}}],
                "current-context": "e2e",
            }
        )
    )
    return path


@dataclass
class Cluster:
    server: str
    ca_file: Path
    admin_kubeconfig: Path
    workdir: Path

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def audit_events(self, username: str) -> list[dict[str, Any]]:
        """The API server's audit events for ``username``: each finished request, and each
        watch once it started (a watch completes only when it ends)."""
        with self.audit_log.open() as f:
            events = (json.loads(line) for line in f)
            return [e for e in events if is_request(e) and e["user"]["username"] == username]

    def kubectl(
        self,
        *args: str,
        kubeconfig: Path | None = None,
        check: bool = True,
        input_: str | None = None,
    ) -> subprocess.CompletedProcess[str]:
        cmd = ["kubectl", f"--kubeconfig={kubeconfig or self.admin_kubeconfig}", *args]
        result = subprocess.run(
            cmd, capture_output=True, text=True, input=input_, timeout=60, check=False
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed: {result.stderr.strip()}")
        return result

    def apply(self, manifest: str | dict[str, Any], namespace: str | None = None) -> None:
        text = manifest if isinstance(manifest, str) else yaml.safe_dump(manifest)
        ns = [f"--namespace={namespace}"] if namespace else []
        # kubectl 1.32 against a 1.20 server: skip client-side schema validation.
        self.kubectl("apply", "--validate=false", *ns, "-f", "-", input_=text)

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        ns = [f"--namespace={namespace}"] if namespace else []
        result = self.kubectl("get", kind, name, *ns, "-o", "json", check=False)
        if result.returncode != 0:
            if "NotFound" in result.stderr:
                return None
            raise AssertionError(result.stderr)
        out: dict[str, Any] = json.loads(result.stdout)
        return out

    def service_account_kubeconfig(self, namespace: str, name: str) -> Path:
        """A kubeconfig with the ServiceAccount's token (from its token Secret)."""

        def token() -> str | None:
            sa = self.get("serviceaccount", name, namespace)
            for ref in (sa or {}).get("secrets") or []:
                secret = self.get("secret", ref["name"], namespace)
                if secret and secret.get("data", {}).get("token"):
                    return base64.b64decode(secret["data"]["token"]).decode()
            return None

        value = wait_for(token, 60, f"the token of serviceaccount {namespace}/{name}")
        return kubeconfig(self.server, self.ca_file, value, self.workdir / f"{name}.kubeconfig")


def chart_manifests(
    release: str = "fraud-detector", namespace: str = "fraud-system", *values: str
) -> list[dict[str, Any]]:
    """``helm template`` of the chart, as the platform team would install it."""
    out = subprocess.run(
        [
            str(HELM),
            "template",
            release,
            str(Path(__file__).resolve().parents[2] / "charts/fraud-detector"),
            "--namespace",
            namespace,
            "--kube-version",  # what `helm install` reads from the cluster
            "1.20.2",
            *(arg for value in values for arg in ("--set", value)),
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def _start(cmd: list[str], log: Path) -> subprocess.Popen[bytes]:
    fh = log.open("wb")
    return subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)


def _stop(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in reversed(procs):
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    for proc in reversed(procs):
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def audit_policy(work: Path) -> Path:
    path = work / "audit-policy.yaml"
    policy = {
        "apiVersion": "audit.k8s.io/v1",
        "kind": "Policy",
        "omitStages": ["RequestReceived"],
        "rules": [
            {"level": "Metadata", "userGroups": ["system:serviceaccounts"]},
            {"level": "None"},
        ],
    }
    path.write_text(yaml.safe_dump(policy))
    return path


@contextmanager
def control_plane(advertise: str = "127.0.0.1") -> Iterator[Cluster]:
    """The control plane, serving on 127.0.0.1; ``advertise`` is the address the
    ``kubernetes`` Service leads pods to (the node tier's bridge, forwarded to 127.0.0.1)."""
    missing = [
        b
        for b in ("etcd", "kube-apiserver", "kube-controller-manager")
        if not (KUBE_BIN / b).is_file()
    ]
    if missing:
        raise RuntimeError(
            f"{', '.join(missing)} not in {KUBE_BIN}: run scripts/build-kube.sh "
            "(make test does) to build Kubernetes v1.20.2 from Debian's source package"
        )
    work = Path(tempfile.mkdtemp(prefix="fraud-kube-"))
    procs: list[subprocess.Popen[bytes]] = []
    try:
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        procs.append(
            _start(
                [
                    str(KUBE_BIN / "etcd"),
                    "--data-dir",
                    str(work / "etcd"),
                    "--listen-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--advertise-client-urls",
                    f"http://127.0.0.1:{etcd_port}",
                    "--listen-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-advertise-peer-urls",
                    f"http://127.0.0.1:{peer_port}",
                    "--initial-cluster",
                    f"default=http://127.0.0.1:{peer_port}",
                    "--unsafe-no-fsync",
                ],
                work / "etcd.log",
            )
        )
        sa_key, sa_pub = work / "sa.key", work / "sa.pub"
        subprocess.run(
            ["openssl", "genrsa", "-out", str(sa_key), "2048"], check=True, capture_output=True
        )
        subprocess.run(
            ["openssl", "rsa", "-in", str(sa_key), "-pubout", "-out", str(sa_pub)],
            check=True,
            capture_output=True,
        )
        (work / "tokens.csv").write_text(f"{ADMIN_TOKEN},e2e-admin,e2e-admin,system:masters\n")
        certs = work / "certs"
        procs.append(
            _start(
                [
                    str(KUBE_BIN / "kube-apiserver"),
                    f"--etcd-servers=http://127.0.0.1:{etcd_port}",
                    "--bind-address=127.0.0.1",
                    f"--advertise-address={advertise}",
                    f"--secure-port={api_port}",
                    "--insecure-port=0",
                    f"--cert-dir={certs}",
                    f"--token-auth-file={work / 'tokens.csv'}",
                    "--authorization-mode=RBAC",
                    f"--service-account-key-file={sa_pub}",
                    f"--service-account-signing-key-file={sa_key}",
                    "--service-account-issuer=https://kubernetes.default.svc",
                    "--service-cluster-ip-range=10.96.0.0/16",
                    "--anonymous-auth=false",
                    # Every request a ServiceAccount makes, at Metadata level: what the
                    # operator really does, for the least-privilege test.
                    f"--audit-policy-file={audit_policy(work)}",
                    f"--audit-log-path={work / 'audit.log'}",
                    "--audit-log-format=json",
                ],
                work / "apiserver.log",
            )
        )
        server = f"https://127.0.0.1:{api_port}"
        ca_file = certs / "apiserver.crt"
        wait_for(ca_file.exists, 60, "the API server's certificate")
        context = ssl.create_default_context(cafile=str(ca_file))

        def healthy() -> bool:
            request = urllib.request.Request(
                f"{server}/readyz", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
            )
            try:
                with urllib.request.urlopen(request, context=context, timeout=2) as r:
                    return bool(r.status == 200)
            except OSError:
                return False

        wait_for(healthy, 90, "kube-apiserver /readyz", every=0.5)
        admin = kubeconfig(server, ca_file, ADMIN_TOKEN, work / "admin.kubeconfig")
        procs.append(
            _start(
                [
                    str(KUBE_BIN / "kube-controller-manager"),
                    f"--kubeconfig={admin}",
                    "--bind-address=127.0.0.1",
                    "--secure-port=0",
                    "--port=0",
                    "--leader-elect=false",
                    f"--service-account-private-key-file={sa_key}",
                    f"--root-ca-file={ca_file}",
                    "--controllers=*",
                    "--use-service-account-credentials=false",
                ],
                work / "controller-manager.log",
            )
        )
        yield Cluster(server, ca_file, admin, work)
    finally:
        _stop(procs)
        shutil.rmtree(work, ignore_errors=True)
