"""Plays the kubelet for one container of a Deployment the operator wrote: the ConfigMap
volumes it mounts written to a folder, the environment resolved from the Secrets it names
(as the kubelet does), and the container's command run as a local process from this
environment's ``bin``. What a test changes for this machine (loopback addresses, ports) it
passes as ``env``, which the processes' settings take over their files."""

from __future__ import annotations

import base64
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.e2e.cluster import Cluster


def container_process(
    c: Cluster,
    deployment: dict[str, Any],
    workdir: Path,
    env: dict[str, str],
    log: Path,
) -> subprocess.Popen[bytes]:
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    namespace = deployment["metadata"]["namespace"]
    mounts = {m["name"]: m["mountPath"] for m in container.get("volumeMounts", [])}
    paths: dict[str, str] = {}
    for volume in pod.get("volumes", []):
        if "configMap" not in volume or volume["name"] not in mounts:
            continue
        cm = c.get("configmap", volume["configMap"]["name"], namespace)
        assert cm is not None, f"ConfigMap {volume['configMap']['name']} is missing"
        folder = workdir / volume["name"]
        folder.mkdir(parents=True, exist_ok=True)
        for key, text in cm["data"].items():
            (folder / key).write_text(text)
        paths[mounts[volume["name"]]] = str(folder)
    resolved: dict[str, str] = {}
    for var in container.get("env", []):
        if "value" in var:
            resolved[var["name"]] = var["value"]
            continue
        ref = var["valueFrom"]["secretKeyRef"]
        secret = c.get("secret", ref["name"], namespace)
        assert secret is not None, f"Secret {ref['name']} is missing"
        resolved[var["name"]] = base64.b64decode(secret["data"][ref["key"]]).decode()

    def local(arg: str) -> str:
        for mount, folder in paths.items():
            if arg.startswith(mount + "/"):
                return folder + arg[len(mount) :]
        return arg

    command = [str(Path(sys.executable).parent / container["command"][0])]
    command += [local(a) for a in container["command"][1:] + container.get("args", [])]
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env={"PATH": str(Path(sys.executable).parent), **resolved, **env},
            stdout=out, stderr=subprocess.STDOUT,
        )  # fmt: skip
