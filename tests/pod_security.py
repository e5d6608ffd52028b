"""The Kubernetes "restricted" Pod Security Standard (v1.25+ text), as a checker for rendered
pod specs. The API server of the e2e tests (1.20) predates the PodSecurity admission plugin,
so the tests apply the same rules here, field by field:
https://kubernetes.io/docs/concepts/security/pod-security-standards/#restricted
"""

from __future__ import annotations

from typing import Any

ALLOWED_VOLUMES = {
    "configMap",
    "csi",
    "downwardAPI",
    "emptyDir",
    "ephemeral",
    "persistentVolumeClaim",
    "projected",
    "secret",
}
SAFE_SYSCTLS = {
    "kernel.shm_rmid_forced",
    "net.ipv4.ip_local_port_range",
    "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies",
    "net.ipv4.ping_group_range",
}


def restricted_violations(pod: dict[str, Any]) -> list[str]:
    """Every way ``pod`` (a PodSpec) breaks the restricted profile; empty when it passes."""
    psc = pod.get("securityContext") or {}
    out = [f"{flag} is true" for flag in ("hostNetwork", "hostPID", "hostIPC") if pod.get(flag)]
    for volume in pod.get("volumes") or []:
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            out.append(f"volume {volume['name']} is {sorted(kinds - ALLOWED_VOLUMES)}")
    out += [
        f"unsafe sysctl {s['name']}"
        for s in psc.get("sysctls") or []
        if s["name"] not in SAFE_SYSCTLS
    ]
    pod_seccomp = (psc.get("seccompProfile") or {}).get("type")
    containers = [
        *(pod.get("initContainers") or []),
        *(pod.get("containers") or []),
        *(pod.get("ephemeralContainers") or []),
    ]
    for c in containers:
        name, sc = c["name"], c.get("securityContext") or {}
        if sc.get("privileged"):
            out.append(f"{name}: privileged")
        if sc.get("allowPrivilegeEscalation") is not False:
            out.append(f"{name}: allowPrivilegeEscalation is not false")
        if not (
            sc.get("runAsNonRoot") is True
            or (psc.get("runAsNonRoot") is True and sc.get("runAsNonRoot") is not False)
        ):
            out.append(f"{name}: runAsNonRoot is not true")
        if sc.get("runAsUser", psc.get("runAsUser")) == 0:
            out.append(f"{name}: runs as UID 0")
        seccomp = (sc.get("seccompProfile") or {}).get("type", pod_seccomp)
        if seccomp not in ("RuntimeDefault", "Localhost"):
            out.append(f"{name}: seccompProfile is {seccomp!r}, not RuntimeDefault/Localhost")
        caps = sc.get("capabilities") or {}
        if "ALL" not in (caps.get("drop") or []):
            out.append(f"{name}: capabilities do not drop ALL")
        added = set(caps.get("add") or []) - {"NET_BIND_SERVICE"}
        if added:
            out.append(f"{name}: adds capabilities {sorted(added)}")
        out += [
            f"{name}: hostPort {p['hostPort']}" for p in c.get("ports") or [] if p.get("hostPort")
        ]
        if sc.get("procMount", "Default") != "Default":
            out.append(f"{name}: procMount {sc['procMount']}")
        selinux = (sc.get("seLinuxOptions") or psc.get("seLinuxOptions") or {}).get("type")
        if selinux not in (None, "", "container_t", "container_init_t", "container_kvm_t"):
            out.append(f"{name}: SELinux type {selinux}")
    return out
