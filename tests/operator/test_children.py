"""What a pass reads of a detector's children: the watched ones from the operator's index
(no API call), the others from the API server; and what the index keeps of each child."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from fraud_operator import kube as kube_module
from fraud_operator.builders import ApiVersions, watched_kinds
from fraud_operator.kube import UNREAD, Children, Kube, detector_of, kept, packed, unpacked


class Unreachable(Kube):
    """A Kube whose every read fails the test: the pass was to need none."""

    def __init__(self) -> None:  # no API client at all, only the memory of its own writes
        self._written = {}
        self._written_lock = threading.Lock()

    def get(self, *args: Any) -> dict[str, Any] | None:
        raise AssertionError(f"read from the API server: {args}")

    def labelled(self, *args: Any) -> list[dict[str, Any]]:
        raise AssertionError(f"listed from the API server: {args}")


def child(kind: str, name: str, api_version: str = "v1", **labels: str) -> dict[str, Any]:
    uid = "fd-uid"
    return {
        "apiVersion": api_version,
        "kind": kind,
        "metadata": {
            "name": name,
            "namespace": "ns",
            "labels": {"app.kubernetes.io/instance": "fd", **labels},
            "ownerReferences": [
                {
                    "apiVersion": "frauddetection.io/v1alpha1",
                    "kind": "FraudDetector",
                    "name": "fd",
                    "uid": uid,
                    "controller": True,
                }
            ],
        },
    }


WATCHED = watched_kinds(ApiVersions(autoscaling="autoscaling/v2beta2", policy="policy/v1beta1"))


def test_the_watched_kinds_follow_what_the_cluster_serves() -> None:
    assert ("policy/v1beta1", "PodDisruptionBudget") in WATCHED
    assert ("autoscaling/v2beta2", "HorizontalPodAutoscaler") in WATCHED
    assert {("apps/v1", "Deployment"), ("v1", "ConfigMap"), ("v1", "Service")} <= WATCHED
    # Optional CRDs: watched when served at start (a later one is read when needed).
    assert not {k for k in WATCHED if k[0].startswith(("keda.sh/", "monitoring.coreos.com/"))}
    with_both = watched_kinds(ApiVersions(keda=True, service_monitor=True))
    assert {("keda.sh/v1alpha1", "ScaledObject"), ("keda.sh/v1alpha1", "TriggerAuthentication"),
            ("monitoring.coreos.com/v1", "ServiceMonitor")} <= with_both  # fmt: skip


def test_watched_children_are_answered_from_memory_absent_means_absent() -> None:
    dep = child("Deployment", "fd-scorer", "apps/v1", track="stable")
    cm = child("ConfigMap", "fd-scorer-config", track="stable")
    other = child("ConfigMap", "fd-sink-config", sink="webhook")
    children = Children(Unreachable(), "ns", (dep, cm, other), WATCHED)
    assert children.get("apps/v1", "Deployment", "fd-scorer") is dep
    assert children.get("apps/v1", "Deployment", "fd-canary") is None
    assert children.live(cm) is cm
    assert children.live(child("Service", "fd-scorer")) is None  # to create, without a read
    assert children.labelled("v1", "ConfigMap", {"track": "stable"}) == [cm]
    assert children.controlled(
        "v1", "ConfigMap", {"app.kubernetes.io/instance": "fd"}, "fd-uid"
    ) == [
        "fd-scorer-config",
        "fd-sink-config",
    ]
    assert children.controlled("v1", "ConfigMap", {}, "someone-else") == []


def test_unwatched_kinds_are_read_from_the_api_server() -> None:
    monitor = child("ServiceMonitor", "fd-scorer", "monitoring.coreos.com/v1")
    assert Children(Unreachable(), "ns", (), WATCHED).live(monitor) is UNREAD
    with pytest.raises(AssertionError, match="read from the API server"):
        Children(Unreachable(), "ns", (), WATCHED).get("batch/v1", "Job", "fd-preflight")
    with pytest.raises(AssertionError, match="listed from the API server"):
        Children(Unreachable(), "ns").labelled("apps/v1", "Deployment", {})  # nothing watched


def test_the_index_keeps_what_a_pass_reads_and_no_managed_fields() -> None:
    dep = child("Deployment", "fd-scorer", "apps/v1")
    notes = {"deployment.kubernetes.io/revision": "1", "frauddetection.io/model": "m"}
    dep["metadata"] |= {"managedFields": [{"manager": "x"}] * 20, "resourceVersion": "9",
                        "generation": 3, "annotations": notes}  # fmt: skip
    dep["spec"] = {"replicas": 2}
    dep["status"] = {"replicas": 2, "readyReplicas": 1, "conditions": [{"type": "Available"}],
                     "observedGeneration": 3}  # fmt: skip
    out = kept(dep)
    assert set(out["metadata"]) == {"name", "namespace", "labels", "annotations",
                                    "ownerReferences", "generation"}  # fmt: skip
    assert out["status"] == {"replicas": 2, "readyReplicas": 1}  # what the detector's status uses
    assert out["metadata"]["annotations"] == {"frauddetection.io/model": "m"}  # only ours
    assert out["spec"] == {"replicas": 2}
    hpa = child("HorizontalPodAutoscaler", "fd-scorer", "autoscaling/v2beta2")
    hpa["status"] = {"currentReplicas": 1}
    assert "status" not in kept(hpa)  # an autoscaler's status churns and says nothing to a pass
    assert kept(hpa) == kept({**hpa, "status": {"currentReplicas": 5}})
    # Held packed: equal objects, equal bytes, whatever the order of their keys.
    assert packed(hpa) == packed(dict(reversed(list(hpa.items()))))
    assert unpacked(packed(dep)) == out
    assert detector_of(hpa) == "fd"
    del hpa["metadata"]["ownerReferences"]  # orphaned: still the detector's, by its label
    assert detector_of(hpa) == "fd"
    assert detector_of({"metadata": {"labels": {"app": "x"}}}) is None


def test_what_the_operator_just_wrote_counts_until_the_watch_delivers_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A pass right after the one that created a canary's Deployment sees it (a watch event
    may not have arrived): a rollout is not recovered as though the canary were gone."""
    kube = Unreachable()
    canary = child("Deployment", "fd-scorer-canary", "apps/v1", track="canary")
    pruned = child("ConfigMap", "fd-scorer-shadow-config", track="shadow")
    kube._remember("fd", canary, canary)
    kube._remember("fd", pruned, None)  # deleted by the operator; the watch still has it
    soon = kube.children("ns", "fd", (packed(pruned),), WATCHED)
    assert soon.labelled("apps/v1", "Deployment", {"track": "canary"}) == [kept(canary)]
    assert soon.get("v1", "ConfigMap", "fd-scorer-shadow-config") is None
    assert kube.children("ns", "other-fd", (), WATCHED).objects == ()  # not another's
    assert kube.children("elsewhere", "fd", (), WATCHED).objects == ()

    # Once the watch has both, the watch alone is believed: a later hand deletion shows.
    caught_up = kube.children("ns", "fd", (packed(canary),), WATCHED)
    assert caught_up.get("apps/v1", "Deployment", "fd-scorer-canary") == kept(canary)
    assert kube._written == {}  # the canary is there, the ConfigMap gone: both caught up
    assert kube.children("ns", "fd", (), WATCHED).objects == ()

    # A write the watch never delivers is trusted for RECENT_S only.
    kube._remember("fd", canary, canary)
    later = time.monotonic() + kube_module.RECENT_S + 1
    monkeypatch.setattr(kube_module.time, "monotonic", lambda: later)
    assert kube.children("ns", "fd", (), WATCHED).objects == ()
