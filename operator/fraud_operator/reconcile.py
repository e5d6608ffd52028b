"""One reconcile pass for one FraudDetector: read it, validate, apply its children, rebuild
its status, record Events for what changed. Every trigger (create, update, resume, the
periodic timer, a child edited or deleted by hand) ends up here.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from fraud_runtime.redact import public_url
from kubernetes.dynamic.exceptions import DynamicApiError

from fraud_operator import builders, kafka_probe, rollout
from fraud_operator.analysis import Result, analyse
from fraud_operator.builders import ApiVersions, Detector, TrackPlan
from fraud_operator.detector_cache import DetectorCache, version_of
from fraud_operator.kube import Children, Kube, secret_value
from fraud_operator.metrics import OperatorMetrics
from fraud_operator.prometheus import (
    Prometheus,
    PrometheusError,
    loaded_rules_versions,
    track_sample,
)
from fraud_operator.spec import (
    GROUP,
    PROJECT_IMAGES,
    DefaultImages,
    FraudDetectorSpec,
    Rollout,
    Rulebook,
)
from fraud_operator.status import CONDITIONS, build_status, condition, transitions
from fraud_operator.validation import (
    DEFAULT_ALLOWED_IMAGES,
    Problem,
    check_transport,
    parse_spec,
    required_secrets,
    rules_version_of,
    validate,
)

log = logging.getLogger("fraud_operator.reconcile")
PartitionProbe = Callable[[FraudDetectorSpec, str | None], int | None]


@dataclass(frozen=True)
class Quiet:
    """A detector whose last pass left nothing to poll for: no rollout in flight, no problem
    that only a later look could clear (a missing Secret, a refused apply), the rules the
    scorers report equal to the spec's. What can still change it wakes a pass through an event
    (the detector edited, a child changed or deleted), so the periodic timer skips it, with no
    API call, while the detector's inputs (:func:`inputs_of`) are the ones that pass read,
    until the safety-net pass is due."""

    inputs: str
    phase: str
    until: float  # time.monotonic() of the safety-net pass


@dataclass
class Reconciler:
    kube: Kube
    metrics: OperatorMetrics
    probe: PartitionProbe = kafka_probe.partitions
    prometheus_url: str | None = None
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)
    api_ttl_s: float = 300.0  # how often the served API versions and optional CRDs are re-read
    allowed_images: tuple[str, ...] = DEFAULT_ALLOWED_IMAGES
    default_images: DefaultImages = PROJECT_IMAGES
    _api: tuple[float, ApiVersions] | None = None
    _seen: set[tuple[str, str]] = field(default_factory=set)
    _locks: defaultdict[tuple[str, str], threading.Lock] = field(
        default_factory=lambda: defaultdict(threading.Lock)
    )
    # The safety net for settled detectors: a full pass at least this often (jittered, so a
    # thousand detectors created together do not come due together).
    full_resync_s: float = 600.0
    _quiet: dict[tuple[str, str], Quiet] = field(default_factory=dict)
    # What each detector's last finished pass read (:func:`inputs_of`).
    _read: dict[tuple[str, str], str] = field(default_factory=dict)
    # The detectors as the watch delivered them (fed by the event handler): a pass reads its
    # detector from here unless a write of ours is still on its way, then it GETs.
    detectors: DetectorCache = field(default_factory=DetectorCache)

    def api_versions(self) -> ApiVersions:
        if self._api is None or time.monotonic() - self._api[0] > self.api_ttl_s:
            self._api = (time.monotonic(), self.kube.discover())
        return self._api[1]

    def __call__(
        self,
        namespace: str,
        name: str,
        body: dict[str, Any] | None = None,
        children: Callable[[], Children] | None = None,
    ) -> str:
        """Reconcile one FraudDetector; returns its phase ("Gone" if it no longer exists).
        With ``body`` (kopf's copy from its watch), a settled detector that has not changed
        since its last pass is skipped without any API call. ``children``: what the
        operator's watches hold of its children, read once the pass holds the detector's lock
        (a copy taken before would miss what the pass before it wrote); without, every child
        is read from the API server."""
        if body is not None and (quiet := self.quiet(namespace, name, body)) is not None:
            self.metrics.reconciles.labels(result="skipped").inc()
            return quiet.phase
        started = time.perf_counter()
        with self._locks[(namespace, name)]:
            try:
                kids = children() if children is not None else Children(self.kube, namespace)
                phase = self._reconcile(namespace, name, kids)
            except Exception:
                # Neither skipped by the timer nor taken for seen: the next look tries again.
                self._quiet.pop((namespace, name), None)
                self._read.pop((namespace, name), None)
                self.metrics.reconciles.labels(result="error").inc()
                raise
        self.metrics.reconciles.labels(result="ok").inc()
        self.metrics.duration.observe(time.perf_counter() - started)
        return phase

    def changed(self, namespace: str, name: str, body: dict[str, Any]) -> bool:
        """Whether ``body`` differs in its inputs from what the detector's last pass read: an
        edit, or one never seen. Our own status write, kopf's or kubectl's metadata do not."""
        return self._read.get((namespace, name)) != inputs_of(body)

    def quiet(self, namespace: str, name: str, body: dict[str, Any]) -> Quiet | None:
        found = self._quiet.get((namespace, name))
        if found is None or time.monotonic() >= found.until:
            return None
        return found if inputs_of(body) == found.inputs else None

    def _problems(
        self, body: dict[str, Any], namespace: str
    ) -> tuple[FraudDetectorSpec | None, list[Problem]]:
        parsed = parse_spec(body.get("spec") or {})
        if isinstance(parsed, Problem):
            return None, [parsed]
        secrets = self.kube.secret_keys(namespace, required_secrets(parsed))
        partitions = None
        if check_transport(parsed) is None:  # never probe with a password sent in clear
            partitions = self.probe(parsed, self._kafka_password(parsed, namespace, secrets))
        return parsed, validate(
            parsed, namespace, secrets, partitions, self.allowed_images, self.default_images
        )

    def _kafka_password(
        self, spec: FraudDetectorSpec, namespace: str, secrets: dict[str, set[str] | None]
    ) -> str | None:
        auth = spec.kafka.authentication
        if auth is None or not secrets.get(auth.password_secret.secret_name):
            return None
        ref = auth.password_secret
        return secret_value(self.kube, namespace, ref.secret_name, ref.password)

    def _detector(self, namespace: str, name: str) -> dict[str, Any] | None:
        key = (namespace, name)
        body = self.detectors.current(key)
        if body is None:
            body = self.kube.detector(namespace, name)
            if body is not None:
                self.detectors.awaiting(key, version_of(body))
        return body

    def _reconcile(self, namespace: str, name: str, children: Children) -> str:
        body = self._detector(namespace, name)
        if body is None or body["metadata"].get("deletionTimestamp"):
            self._quiet.pop((namespace, name), None)
            self._read.pop((namespace, name), None)
            if (namespace, name) in self._seen:
                self.metrics.detector_ready.remove(namespace, name)
                self._seen.discard((namespace, name))
            return "Gone"  # children go with it (owner references)
        meta = body["metadata"]
        old_status = body.get("status") or {}
        previous = old_status.get("conditions") or []
        spec, problems = self._problems(body, namespace)
        deployment = stage = None
        state = rollout.State.from_status(old_status)
        preflight_note = ""
        if spec is not None and not problems:
            detector = Detector(name, namespace, meta["uid"], spec, self.default_images)
            api = self.api_versions()
            state, preflight_note, stable_rules = self._advance(detector, body, state, children)
            plans = plans_for(state, stable_rules)
            desired = builders.children(detector, api, plans)
            self._apply_all(desired, problems, children)
            self._prune(detector, api, desired, children)
            deployment = children.get("apps/v1", "Deployment", builders.scorer_name(detector))
            if builders.staged_features(detector) is not None:
                stage = children.get("apps/v1", "Deployment", builders.stage_name(detector)) or {
                    "spec": {"replicas": 0}
                }
        else:
            for p in problems:
                self.metrics.invalid.labels(reason=p.reason).inc()
        status = build_status(
            generation=int(meta.get("generation") or 0),
            problems=problems,
            deployment=deployment,
            model_version=state.stable.model.version if state.stable else None,
            rules_version=rules_version_of(spec) if spec is not None and not problems else None,
            previous=previous,
            now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            stage=stage,
        )
        status = merge_rollout(status, state, preflight_note, previous)
        if spec is not None and not problems:
            status.update(
                self._rules_status(
                    name, spec, status.get("rulesVersion"), old_status.get("rulesVersion")
                )
            )
        self._quiet.pop((namespace, name), None)
        if without_nulls(status) == old_status:  # nothing new to say: no write
            self.metrics.writes.labels(kind="FraudDetectorStatus", outcome="unchanged").inc()
        else:
            self.detectors.write(
                (namespace, name), lambda: self.kube.patch_status(namespace, name, status)
            )
            self.metrics.writes.labels(kind="FraudDetectorStatus", outcome="updated").inc()
        settled = (
            spec is not None
            and not problems
            and state.candidate is None
            and not preflight_note
            and status.get("rulesVersion") in (None, status.get("rulesVersionDesired"))
        )
        read = self._read[(namespace, name)] = inputs_of(body)
        if settled:
            until = time.monotonic() + self.full_resync_s * random.uniform(0.8, 1.2)
            self._quiet[(namespace, name)] = Quiet(read, str(status["phase"]), until)
        ready: dict[str, Any] = next((c for c in status["conditions"] if c["type"] == "Ready"), {})
        self.metrics.detector_ready.labels(namespace, name).set(ready.get("status") == "True")
        self._seen.add((namespace, name))
        for c in transitions(previous, status["conditions"]):
            progress = c["reason"] in ("Creating", "ReplicasNotReady")
            if (c["type"] == "Ready" and not progress) or (
                c["type"] in ("RulesValid", "ModelReady") and c["status"] == "False"
            ):
                # Ready's way up (Creating, then ReplicasNotReady) is the status's to show, as
                # the Deployment's own Events show its pods: an Event when it gets there or
                # something goes wrong, not two per detector on the way (a request each).
                bad = c["status"] == "False"
                self.kube.event(
                    body,
                    type_="Warning" if bad else "Normal",
                    reason=c["reason"],
                    message=c["message"] or c["reason"],
                )
        return str(status["phase"])

    def _apply_all(
        self, objects: list[dict[str, Any]], problems: list[Problem], children: Children
    ) -> None:
        for child in objects:
            try:
                outcome = self.kube.apply(child, children.live(child))
            except DynamicApiError as exc:
                # Reported, and retried by the next pass (the timer): never a crash loop.
                what = f"{child['kind']} {child['metadata']['name']}"
                summary = exc.summary()  # type: ignore[no-untyped-call]
                problems.append(Problem("ApplyFailed", f"{what}: {summary}"))
                self.metrics.writes.labels(kind=child["kind"], outcome="error").inc()
                continue
            self.metrics.writes.labels(kind=child["kind"], outcome=outcome).inc()

    def _advance(
        self, d: Detector, body: dict[str, Any], state: rollout.State, children: Children
    ) -> tuple[rollout.State, str, Rulebook | None]:
        """One step of the rollout state machine, with its inputs gathered from the cluster
        (live tracks, preflight Job, manual override annotations) and Prometheus (analysis).
        Also returns the rules the stable track keeps while candidate rules roll out (None:
        the spec's)."""
        now = self.clock()
        policy = d.spec.rollout
        staged = (policy or Rollout()).rules == "staged"
        override = overrides(body["metadata"].get("annotations") or {})
        wanted = Rulebook.of(d.spec)
        desired = rollout.Release(d.spec.model, wanted.version if staged else None)
        live, books = self.live_tracks(d, desired, children)
        if not staged:
            ended = rollout.without_rules(state, now)
            if ended.phase != state.phase:  # a rollout of rules alone has nothing left to do
                self.kube.event(body, type_="Normal", reason=ended.reason, message=ended.message)
            state = ended
        preflight: rollout.Preflight = "pending"
        note = ""
        if state.phase == "Preflight" and state.candidate is not None:
            preflight, note = self._preflight(d, state.candidate, state.stable)
        result = None
        if rollout.analysis_due(state, policy, now):
            stable_book = books.get("stable", wanted)
            result = self._analyse(d, policy or Rollout(), wanted.same_rules(stable_book))
        recovered = rollout.recover(state, live, policy, now)
        if recovered != state:
            log.warning("%s/%s: %s", d.namespace, d.name, recovered.message)
            self.kube.event(
                body, type_="Warning", reason="RolloutRecovered", message=recovered.message
            )
            state = recovered
        new, transition = rollout.step(
            state,
            desired,
            policy,
            now,
            preflight=preflight,
            analysis=result,
            override=override,
        )
        if override is not None:
            self.detectors.write(
                (d.namespace, d.name),
                lambda: self.kube.clear_annotations(d.namespace, d.name, OVERRIDES),
            )
        self._record(body, transition)
        if new.phase == "Preflight" and new.candidate is not None and state.phase != "Preflight":
            # Start the Job now, not on the next pass; rules alone need none and go on at once
            # (without a rollout policy, a rule edit is promoted in this very pass).
            preflight, note = self._preflight(d, new.candidate, new.stable)
            if preflight != "pending":
                new, transition = rollout.step(new, desired, policy, now, preflight=preflight)
                self._record(body, transition)
        behind = new.stable is not None and new.stable.rules not in (None, wanted.version)
        return new, note, books.get("stable") if behind else None

    def _record(self, body: dict[str, Any], transition: rollout.Transition | None) -> None:
        if transition is not None:
            meta = body["metadata"]
            self.metrics.rollout_transitions.labels(
                namespace=meta["namespace"], name=meta["name"], reason=transition.reason
            ).inc()
            self.kube.event(
                body,
                type_="Warning" if transition.warning else "Normal",
                reason=transition.reason,
                message=transition.message,
            )

    def live_tracks(
        self, d: Detector, desired: rollout.Release, children: Children
    ) -> tuple[rollout.Live, dict[str, Rulebook]]:
        """What the scorer tracks run, for :func:`rollout.recover`: models from the
        Deployments' annotations, rules from their ConfigMaps; and each track's rules and
        thresholds, by track."""
        running = {
            t.track: t
            for dep in children.labelled("apps/v1", "Deployment", builders.labels(d, None))
            if (t := builders.running_track(d, dep)) is not None
        }
        books: dict[str, Rulebook] = {}
        if desired.rules is not None:
            for cm in children.labelled("v1", "ConfigMap", builders.labels(d, None)):
                if (found := builders.running_rulebook(d, cm)) is not None:
                    books[found[0]] = found[1]

        def release(track: str) -> rollout.Release | None:
            t = running.get(track)
            if t is None:
                return None
            if desired.rules is None:
                return rollout.Release(t.model)
            book = books.get(track)
            # Unreadable: a candidate track's ConfigMap only ever holds the spec's rules; for
            # stable see below.
            return rollout.Release(t.model, book.version if book else desired.rules)

        if running.get("stable") and desired.rules is not None and "stable" not in books:
            log.warning(
                "%s/%s: the stable track's ConfigMap is gone or unreadable: its rules cannot "
                "be read back, and the spec's (%s) are taken as stable",
                d.namespace,
                d.name,
                desired.rules,
            )
        canary = running.get("canary")
        return rollout.Live(
            stable=release("stable"),
            canary=release("canary"),
            canary_weight=canary.end if canary else 0,
            shadow=release("shadow"),
        ), books

    def _preflight(
        self, d: Detector, candidate: rollout.Release, stable: rollout.Release | None
    ) -> tuple[rollout.Preflight, str]:
        """A new model runs its preflight Job. Rules alone need none: the operator compiled
        them with the scorer's own compiler before this pass (``RulesValid``)."""
        if stable is not None and candidate.model == stable.model:
            return "ok", "the model is unchanged; the rules compiled"
        model = candidate.model
        job = builders.preflight_job(d, model)
        live = self.kube.get("batch/v1", "Job", d.namespace, job["metadata"]["name"])
        if live is None:
            try:
                self.kube.apply(job)
            except DynamicApiError as exc:
                summary = exc.summary()  # type: ignore[no-untyped-call]
                log.warning("cannot start the preflight Job: %s", summary)
                return "pending", f"cannot start the preflight Job: {summary}"
            return "pending", "preflight Job started"
        status = live.get("status") or {}
        if int(status.get("succeeded") or 0) > 0:
            return "ok", "preflight passed"
        if int(status.get("failed") or 0) > 0:
            return "failed", (
                f"preflight Job {job['metadata']['name']} failed: the model at "
                f"{public_url(model.uri)} does not load in the scorer (see the Job's logs)"
            )
        return "pending", "preflight running"

    def _rules_status(
        self, name: str, spec: FraudDetectorSpec, desired: str | None, known: str | None
    ) -> dict[str, Any]:
        """``rulesVersion`` is what the running scorers report having loaded (from
        Prometheus); ``rulesVersionDesired`` what the spec asks for. Without Prometheus the
        loaded version is unknown and not claimed. Once the scorers were seen to load the
        desired version (``known``, from the last status), Prometheus is not asked again until
        the desired version changes: every scorer, new pods included, loads only it."""
        url = (spec.rollout.prometheus_url if spec.rollout else None) or self.prometheus_url
        if not url:
            return {"rulesVersion": None, "rulesVersionDesired": desired}
        if known is not None and known == desired:
            return {"rulesVersion": known, "rulesVersionDesired": desired}
        try:
            loaded = loaded_rules_versions(Prometheus(url), detector=name)
        except PrometheusError:
            return {"rulesVersionDesired": desired}  # keep the last known value
        return {
            "rulesVersion": ",".join(sorted(loaded)) or None,
            "rulesVersionDesired": desired,
        }

    def _analyse(self, d: Detector, policy: Rollout, shared_rules: frozenset[str]) -> Result:
        url = policy.prometheus_url or self.prometheus_url
        if not url:
            return Result("wait", "NoPrometheus", "no Prometheus URL configured for analysis", ())
        state_track = "canary"
        window = f"{max(rollout.seconds(policy.analysis.interval), 5.0):.0f}s"
        prom = Prometheus(url)
        try:
            stable = track_sample(prom, detector=d.name, track="stable", window=window)
            cand = track_sample(prom, detector=d.name, track=state_track, window=window)
            if cand.transactions is None:
                cand = track_sample(prom, detector=d.name, track="shadow", window=window)
        except PrometheusError as exc:
            return Result("wait", "PrometheusUnavailable", str(exc), ())
        return analyse(policy.analysis, cand, stable, shared_rules)

    def _prune(
        self, d: Detector, api: ApiVersions, desired: list[dict[str, Any]], children: Children
    ) -> None:
        """Delete the operator's own children of this detector that the plan no longer lists
        (of the kinds it may delete): found by label and owner, not remembered."""
        wanted = {(o["kind"], o["metadata"]["name"]) for o in desired}
        for api_version, kind in builders.prunable_kinds(api):
            for name in children.controlled(api_version, kind, builders.owned_by(d), d.uid):
                if (kind, name) not in wanted:
                    self.kube.delete(api_version, kind, d.namespace, name, d.name)


OVERRIDES = (f"{GROUP}/promote", f"{GROUP}/abort")


def inputs_of(body: Mapping[str, Any]) -> str:
    """What a FraudDetector gives its pass (spec, generation, deletion, the override
    annotations and anyone's but the operator's own), as a digest. Its status (our output) and
    kopf's bookkeeping annotations are left out: writing them does not call for another pass."""
    meta = body.get("metadata") or {}
    annotations = meta.get("annotations") or {}
    given = {
        "generation": meta.get("generation"),
        "deletion": meta.get("deletionTimestamp"),
        "spec": body.get("spec"),
        "annotations": {
            k: v for k, v in annotations.items() if k in OVERRIDES or not k.startswith(GROUP)
        },
    }
    text = json.dumps(given, sort_keys=True, default=dict)  # kopf's views are mappings
    return hashlib.sha256(text.encode()).hexdigest()


def without_nulls(value: Any) -> Any:
    """``value`` as the API server keeps it after a merge patch: a null field is removed."""
    if isinstance(value, dict):
        return {k: without_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [without_nulls(v) for v in value]
    return value


def overrides(annotations: dict[str, str]) -> rollout.Override:
    """``frauddetection.io/abort`` wins over ``frauddetection.io/promote``."""
    if annotations.get(f"{GROUP}/abort", "").lower() == "true":
        return "abort"
    if annotations.get(f"{GROUP}/promote", "").lower() == "true":
        return "promote"
    return None


def plans_for(state: rollout.State, stable_rules: Rulebook | None = None) -> tuple[TrackPlan, ...]:
    """Which tracks run which model and rules, and each one's slice of users. The candidate
    always runs the spec's rules; stable keeps ``stable_rules`` (None: the spec's) until the
    candidate is promoted."""
    model = state.stable.model if state.stable else None
    cand = state.candidate.model if state.candidate else None
    if state.phase == "Canary" and cand is not None:
        w = state.weight
        return (
            TrackPlan("stable", model, w, 100, stable_rules),
            TrackPlan("canary", cand, 0, w),
        )
    if state.phase == "Shadow" and cand is not None:
        return (
            TrackPlan("stable", model, 0, 100, stable_rules),
            TrackPlan("shadow", cand, 0, 100),
        )
    return (TrackPlan("stable", model, 0, 100, stable_rules),)


def merge_rollout(
    status: dict[str, Any],
    state: rollout.State,
    preflight_note: str,
    previous: list[dict[str, Any]],
) -> dict[str, Any]:
    """Rollout fields into the status; the phase shows the rollout while one runs."""
    out = {**status, **state.to_status()}
    if status["phase"] == "Degraded":
        out["phase"] = "Degraded"
    elif state.phase == "Stable":
        out["phase"] = status["phase"]  # Ready / Pending, from the replicas
    if state.phase == "RolledBack" and state.reason == "ModelPreflightFailed":
        conditions = [c for c in status["conditions"] if c["type"] != "ModelReady"]
        conditions.append(
            condition(
                "ModelReady",
                False,
                "ModelPreflightFailed",
                state.message or preflight_note,
                generation=status["observedGeneration"],
                previous=previous,
                now=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        )
        out["conditions"] = sorted(conditions, key=lambda c: CONDITIONS.index(c["type"]))
    return out
