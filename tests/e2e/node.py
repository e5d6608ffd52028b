"""A node for the control plane of :mod:`tests.e2e.cluster`: kube-scheduler and a kubelet
(v1.20.2, built by ``FRAUD_KUBE_NODE=1 scripts/build-kube.sh``) on containerd + runc, with a
CNI bridge, so that pods really run (issue 19; docs/node.md).

Images are built with buildah (``vfs`` storage: no overlay here) and imported into containerd;
pods use them with ``imagePullPolicy: IfNotPresent`` (nothing is pulled). The teardown removes
everything the kubelet and the CNI plugins leave on the machine (iptables chains, network
namespaces, mounts, the bridge), so the rest of the suite runs on the machine it found.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket as sockets
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tests.e2e.cluster import (
    KUBE_BIN,
    Cluster,
    _start,
    _stop,
    control_plane,
    is_ready,
    wait_for,
)
from tests.servers import free_port

ROOT = Path(__file__).resolve().parents[2]
NODE = "fraud-node"
BRIDGE, SUBNET, GATEWAY = "fraud0", "10.88.0.0/16", "10.88.0.1"
PAUSE_IMAGE = "localhost/fraud-node/pause:1"
# Everything the kubelet adds to iptables (v1.20) and kube-proxy's clean-up leaves, removed at
# teardown: (table, chain, the
# built-in chains that jump to it).
KUBELET_CHAINS = (
    ("filter", "KUBE-FIREWALL", ("INPUT", "OUTPUT")),
    ("nat", "KUBE-POSTROUTING", ("POSTROUTING",)),
    ("nat", "KUBE-MARK-DROP", ()),
    ("nat", "KUBE-MARK-MASQ", ()),
    ("filter", "KUBE-KUBELET-CANARY", ()),
    ("nat", "KUBE-KUBELET-CANARY", ()),
    ("mangle", "KUBE-KUBELET-CANARY", ()),
    # what `kube-proxy --cleanup` leaves
    ("filter", "KUBE-PROXY-CANARY", ()),
    ("nat", "KUBE-PROXY-CANARY", ()),
    ("mangle", "KUBE-PROXY-CANARY", ()),
)
PACKAGES = {
    "containerd": "containerd",
    "runc": "runc",
    "buildah": "buildah",
    "socat": "socat",
    "conntrack": "conntrack",
}


def missing() -> list[str]:
    """What this machine lacks to run a node (empty: it can)."""
    out = [f"{b} (apt-get install {p})" for b, p in PACKAGES.items() if not shutil.which(b)]
    out += [
        f"{KUBE_BIN / b} (FRAUD_KUBE_NODE=1 scripts/build-kube.sh)"
        for b in ("kubelet", "kube-scheduler", "kube-proxy", "pause")
        if not (KUBE_BIN / b).is_file()
    ]
    if not Path("/usr/lib/cni/bridge").is_file():
        out.append("CNI plugins (apt-get install containernetworking-plugins)")
    return out


@dataclass
class Node:
    cluster: Cluster
    work: Path
    socket: Path
    forwarders: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)

    def expose(self, port: int) -> str:
        """Forward ``GATEWAY:port`` to ``127.0.0.1:port``, where the tests' servers listen, so
        that pods reach them; returns ``GATEWAY:port``. The bridge's address exists on this
        machine only: nothing listens where a network could reach it."""
        if port not in self.forwarders:
            self.forwarders[port] = _start(
                [
                    "socat",
                    f"TCP-LISTEN:{port},bind={GATEWAY},reuseaddr,fork",
                    f"TCP:127.0.0.1:{port}",
                ],
                self.work / f"forward-{port}.log",
            )
            wait_for(lambda: _accepts(GATEWAY, port), 10, f"the forwarder on {GATEWAY}:{port}")
        return f"{GATEWAY}:{port}"

    def import_image(self, archive: Path) -> None:
        """Load an OCI archive (``scripts/build-images.sh``'s) into the node's containerd."""
        self.ctr("images", "import", "--snapshotter", "native", str(archive))

    def ctr(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["ctr", "--address", str(self.socket), "--namespace", "k8s.io", *args],
            capture_output=True,
            text=True,
            timeout=300,
            check=check,
        )

    def image(self, name: str, rootfs: Path, config: dict[str, list[str]]) -> str:
        """Build image ``name`` from the folder ``rootfs`` (buildah, ``config``: entrypoint,
        cmd) and import it into the node; returns the name."""
        buildah = [
            "buildah",
            "--root",
            str(self.work / "buildah"),
            "--runroot",
            str(self.work / "buildah-run"),
            "--storage-driver",
            "vfs",
        ]

        def run(*args: str) -> str:
            return subprocess.run(
                [*buildah, *args], capture_output=True, text=True, check=True, timeout=300
            ).stdout.strip()

        container = run("from", "scratch")
        run("copy", container, str(rootfs), "/")
        for key, value in config.items():
            run("config", f"--{key}", json.dumps(value), container)
        run("commit", container, name)
        archive = self.work / "image.tar"
        archive.unlink(missing_ok=True)
        # The name goes into the archive: `ctr images import` skips images without one.
        run("push", name, f"oci-archive:{archive}:{name}")
        self.import_image(archive)
        return name


def _accepts(host: str, port: int) -> bool:
    try:
        with sockets.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def _bridge() -> Iterator[None]:
    """The pods' bridge with its gateway address, made before anything else: the API server
    advertises that address and the forwarders listen on it (the CNI plugin adopts it)."""
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)
    for cmd in (
        ["ip", "link", "add", BRIDGE, "type", "bridge"],
        ["ip", "addr", "add", f"{GATEWAY}/{SUBNET.split('/')[1]}", "dev", BRIDGE],
        ["ip", "link", "set", BRIDGE, "up"],
    ):
        subprocess.run(cmd, capture_output=True, check=True, timeout=30)
    try:
        yield
    finally:
        subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True, check=False)


@contextlib.contextmanager
def one_node_cluster() -> Iterator[tuple[Cluster, Node]]:
    """The control plane of :mod:`tests.e2e.cluster` with a node: pods run, reach the API
    server through the ``kubernetes`` Service, and reach the machine's test servers through
    :meth:`Node.expose`."""
    with _bridge(), control_plane(advertise=GATEWAY) as cluster, node(cluster) as it:
        yield cluster, it


def _containerd_config(work: Path, socket: Path) -> Path:
    cni = work / "cni"
    cni.mkdir()
    (cni / "10-fraud-node.conflist").write_text(
        json.dumps(
            {
                "cniVersion": "0.4.0",
                "name": "fraud-node",
                "plugins": [
                    {
                        "type": "bridge",
                        "bridge": BRIDGE,
                        "isGateway": True,
                        "hairpinMode": True,
                        "ipam": {
                            "type": "host-local",
                            "ranges": [[{"subnet": SUBNET, "gateway": GATEWAY}]],
                            "routes": [{"dst": "0.0.0.0/0"}],
                            "dataDir": str(work / "ipam"),
                        },
                    },
                    {"type": "portmap", "capabilities": {"portMappings": True}},
                ],
            }
        )
    )
    config = work / "containerd.toml"
    cri = '[plugins."io.containerd.grpc.v1.cri"'
    config.write_text(
        f"""version = 2
root = "{work / "containerd"}"
state = "{work / "containerd-state"}"
[grpc]
  address = "{socket}"
{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  disable_apparmor = true
{cri}.containerd]
  snapshotter = "native"
  default_runtime_name = "runc"
{cri}.containerd.runtimes.runc]
  runtime_type = "io.containerd.runc.v2"
{cri}.containerd.runtimes.runc.options]
  BinaryName = "{ROOT / "scripts/node/runc-oom-floor"}"
{cri}.cni]
  bin_dir = "/usr/lib/cni"
  conf_dir = "{cni}"
"""
    )
    return config


def _kube_proxy_config(work: Path, kubeconfig: Path) -> Path:
    path = work / "kube-proxy.json"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
                "kind": "KubeProxyConfiguration",
                "clientConnection": {"kubeconfig": str(kubeconfig)},
                "hostnameOverride": NODE,
                "mode": "iptables",
                "clusterCIDR": SUBNET,
                "bindAddress": "127.0.0.1",
                "healthzBindAddress": f"127.0.0.1:{free_port()}",
                "metricsBindAddress": f"127.0.0.1:{free_port()}",
                # Leave the machine's conntrack table size alone.
                "conntrack": {"maxPerCore": 0},
                # A pod reaching a Service whose endpoint is on the same bridge gets its reply
                # through the host (no br_netfilter module needed).
                "iptables": {"masqueradeAll": True},
            }
        )
    )
    return path


def _kubelet_config(work: Path) -> Path:
    path = work / "kubelet.json"
    path.write_text(
        json.dumps(
            {
                "apiVersion": "kubelet.config.k8s.io/v1beta1",
                "kind": "KubeletConfiguration",
                "address": "127.0.0.1",
                "port": free_port(),
                "readOnlyPort": 0,
                "healthzBindAddress": "127.0.0.1",
                "healthzPort": free_port(),
                "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False}},
                "authorization": {"mode": "AlwaysAllow"},
                "cgroupDriver": "cgroupfs",
                "cgroupsPerQOS": False,
                "enforceNodeAllocatable": [],
                "failSwapOn": False,
                "serializeImagePulls": False,
                # A test machine's disk and memory are what they are: no eviction, no image GC.
                "evictionHard": {
                    "memory.available": "0%",
                    "nodefs.available": "0%",
                    "imagefs.available": "0%",
                },
                "imageGCHighThresholdPercent": 100,
                "imageGCLowThresholdPercent": 99,
                "resolvConf": "",
            }
        )
    )
    return path


@contextlib.contextmanager
def node(cluster: Cluster) -> Iterator[Node]:
    lacking = missing()
    if lacking:
        raise RuntimeError(f"this machine cannot run a node; missing: {', '.join(lacking)}")
    # Under /tmp whatever TMPDIR says: containerd's socket path must stay under 108 bytes.
    work = Path(tempfile.mkdtemp(prefix="fraud-node-", dir="/tmp"))
    socket = work / "containerd.sock"
    procs: list[subprocess.Popen[bytes]] = []
    it: Node | None = None
    try:
        procs.append(
            _start(
                ["containerd", "--config", str(_containerd_config(work, socket))],
                work / "containerd.log",
            )
        )
        wait_for(socket.exists, 30, "containerd's socket")
        it = Node(cluster, work, socket)
        pause = work / "pause-rootfs"
        pause.mkdir()
        shutil.copy(KUBE_BIN / "pause", pause / "pause")
        it.image(PAUSE_IMAGE, pause, {"entrypoint": ["/pause"]})
        procs.append(
            _start(
                [
                    str(KUBE_BIN / "kube-scheduler"),
                    f"--kubeconfig={cluster.admin_kubeconfig}",
                    "--bind-address=127.0.0.1",
                    "--port=0",
                    f"--secure-port={free_port()}",
                    "--leader-elect=false",
                ],
                work / "scheduler.log",
            )
        )
        procs.append(
            _start(
                [
                    str(KUBE_BIN / "kube-proxy"),
                    f"--config={_kube_proxy_config(work, cluster.admin_kubeconfig)}",
                ],
                work / "kube-proxy.log",
            )
        )
        procs.append(
            _start(
                [
                    str(KUBE_BIN / "kubelet"),
                    f"--kubeconfig={cluster.admin_kubeconfig}",
                    f"--config={_kubelet_config(work)}",
                    "--container-runtime=remote",
                    f"--container-runtime-endpoint=unix://{socket}",
                    f"--root-dir={work / 'kubelet'}",
                    f"--hostname-override={NODE}",
                    f"--pod-infra-container-image={PAUSE_IMAGE}",
                ],
                work / "kubelet.log",
            )
        )

        wait_for(lambda: is_ready(cluster.get("node", NODE)), 90, f"node {NODE} Ready", every=0.5)
        it.expose(int(cluster.server.rsplit(":", 1)[1]))  # the `kubernetes` Service's endpoint
        yield it
    finally:
        kube, containerd = procs[1:], procs[:1]
        _stop(kube)
        if socket.exists():
            _remove_containers(Node(cluster, work, socket))
        _stop(containerd)
        if it is not None:
            _stop(list(it.forwarders.values()))
        _clean_machine(work)
        shutil.rmtree(work, ignore_errors=True)


def _remove_containers(it: Node) -> None:
    tasks = it.ctr("tasks", "ls", "-q", check=False).stdout.split()
    for task in tasks:
        it.ctr("tasks", "kill", "--signal", "SIGKILL", task, check=False)
    deadline = time.monotonic() + 20
    while tasks and time.monotonic() < deadline:
        time.sleep(0.2)
        for task in tasks:
            it.ctr("tasks", "delete", task, check=False)
        tasks = it.ctr("tasks", "ls", "-q", check=False).stdout.split()


def _clean_machine(work: Path) -> None:
    """Undo what the kubelet and the CNI plugins did outside ``work``, and unmount what they
    mounted inside it."""

    def quiet(*cmd: str) -> None:
        subprocess.run(list(cmd), capture_output=True, check=False, timeout=30)

    quiet(str(KUBE_BIN / "kube-proxy"), "--cleanup")  # kube-proxy's rules and most chains
    for table, chain, jumps in KUBELET_CHAINS:
        for parent in jumps:
            comment = ["-m", "comment", "--comment", "kubernetes postrouting rules"]
            extra = comment if chain == "KUBE-POSTROUTING" else []
            quiet("iptables", "-t", table, "-D", parent, *extra, "-j", chain)
        quiet("iptables", "-t", table, "-F", chain)
        quiet("iptables", "-t", table, "-X", chain)
    mounts = Path("/proc/mounts").read_text().splitlines()
    for point in sorted({m.split()[1] for m in mounts}, reverse=True):
        if point.startswith((str(work), "/run/netns/cni-", "/var/run/netns/cni-")):
            quiet("umount", "-l", point)
    for netns in Path("/run/netns").glob("cni-*") if Path("/run/netns").is_dir() else ():
        quiet("ip", "netns", "delete", netns.name)
