"""The FraudDetector spec (``frauddetection.io/v1alpha1``) as pydantic models.

This is the single source of truth: the CRD's OpenAPI schema in ``crds/`` is generated from
these models (``python -m fraud_operator.crd``) and a test fails if the committed file drifts.
Field names are camelCase on the wire (Kubernetes convention) and snake_case in Python.
"""

from __future__ import annotations

from dataclasses import dataclass
from ipaddress import ip_network
from typing import Annotated, Any, Literal

from fraud_scorer.config import DIGEST_PATTERN, DecisionSettings, RuleSpec, rules_version
from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

GROUP = "frauddetection.io"
VERSION = "v1alpha1"
PLURAL = "frauddetectors"
KIND = "FraudDetector"

Duration = Annotated[str, Field(pattern=r"^[0-9]+(s|m|h)$", examples=["30s", "5m", "1h"])]
Quantity = Annotated[str, Field(pattern=r"^[0-9]+(\.[0-9]+)?(m|Ki|Mi|Gi|k|M|G)?$")]
DnsName = Annotated[
    str, Field(min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
]


class _Model(BaseModel):
    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class PasswordSecret(_Model):
    """Strimzi-style reference to the Secret holding the Kafka password."""

    secret_name: DnsName = Field(description="Secret in the FraudDetector's namespace")
    password: str = Field(default="password", min_length=1, description="key of the password in it")


class Authentication(_Model):
    type: Literal["scram-sha-512", "scram-sha-256", "plain"] = Field(description="SASL mechanism")
    username: str = Field(min_length=1)
    password_secret: PasswordSecret


class CertificateRef(_Model):
    secret_name: DnsName
    certificate: str = Field(
        default="ca.crt", min_length=1, description="key of the PEM in the Secret"
    )


class ClientCertificate(_Model):
    """This client's certificate and key for mutual TLS, from one Secret (a
    ``kubernetes.io/tls`` Secret as is; a Strimzi KafkaUser's with ``user.crt``/``user.key``)."""

    secret_name: DnsName
    certificate: str = Field(default="tls.crt", min_length=1, description="key of the PEM")
    key: str = Field(default="tls.key", min_length=1, description="key of the private key")


class Tls(_Model):
    trusted_certificates: list[CertificateRef] = Field(
        default_factory=list,
        max_length=16,
        description="CA certificates the brokers' certificates chain to; none: the system's "
        "public CAs (a managed Kafka with a public certificate)",
    )
    client_certificate: ClientCertificate | None = Field(
        default=None, description="mutual TLS: the certificate the clients present"
    )


# librdkafka properties the operator sets itself, or that would carry a credential into a
# ConfigMap: refused in kafka.extra, with what to use instead.
_MANAGED_PREFIXES = ("bootstrap.servers", "group.id", "client.id", "security.protocol",
                     "sasl.", "ssl.")  # fmt: skip
_SECRET_WORDS = ("password", "secret", "token", "jaas", "credential")


class Kafka(_Model):
    bootstrap_servers: str = Field(min_length=1, examples=["my-cluster-kafka-bootstrap:9093"])
    authentication: Authentication | None = None
    tls: Tls | None = None
    extra: dict[str, str | int | bool] = Field(
        default_factory=dict,
        max_length=64,
        description="librdkafka properties for every client of this detector (e.g. "
        "client.rack, socket.keepalive.enable); connection and credential settings are the "
        "fields above, and no credential belongs here",
    )

    @model_validator(mode="after")
    def _extra_allowed(self) -> Kafka:
        for name in self.extra:
            if name.startswith(_MANAGED_PREFIXES):
                raise ValueError(
                    f"kafka.extra.{name}: set by the operator from bootstrapServers, "
                    "authentication and tls; use those fields"
                )
            if any(word in name.lower() for word in _SECRET_WORDS):
                raise ValueError(
                    f"kafka.extra.{name}: a credential would sit in a ConfigMap; credentials "
                    "come from Secrets (authentication.passwordSecret, tls.clientCertificate)"
                )
        return self


class Topics(_Model):
    input: str = Field(min_length=1, max_length=249)
    decisions: str = Field(min_length=1, max_length=249)
    alerts: str = Field(min_length=1, max_length=249)
    dead_letter: str = Field(min_length=1, max_length=249)
    labels: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        description="analysts' labels, recorded by the postgres sink and read by the entity "
        "stage for label features",
    )
    by_entity: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        description="the entity stage's repartition topic (default <name>-by-entity); "
        "its partition count bounds the stage's replicas",
    )
    entity_features: str | None = Field(
        default=None,
        min_length=1,
        max_length=249,
        description="the entity stage's table, a compacted topic every scorer reads "
        "(default <name>-entity-features)",
    )


class ModelRef(_Model):
    version: str = Field(min_length=1, max_length=63, pattern=r"^[A-Za-z0-9][-A-Za-z0-9_.]*$")
    uri: str = Field(
        min_length=1,
        max_length=2048,
        description="the model directory (manifest.json, model.onnx): https://, s3://BUCKET/PATH, "
        "gs://BUCKET/PATH or file://, http:// only with allowHttp; no credentials (object "
        "stores are read with serviceAccountName's workload identity)",
    )
    digest: str = Field(
        pattern=DIGEST_PATTERN,
        description="sha256:<hex> of the artifact's manifest.json, which names model.onnx's "
        "sha256: pins both files (`fraud-train digest DIR` prints it)",
    )
    allow_http: bool = Field(
        default=False,
        description="fetch over plain http:// (the digest still pins the content, but the model "
        "travels unencrypted)",
    )
    service_account_name: str | None = Field(
        default=None,
        min_length=1,
        max_length=253,
        pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="the ServiceAccount the scorer pods and preflight Jobs run as, for an s3:// "
        "or gs:// model: bound to read access by workload identity (EKS IRSA or Pod Identity, "
        "GKE Workload Identity); its API token is still not mounted",
    )


class Rule(_Model):
    name: DnsName
    expression: str = Field(
        min_length=1, max_length=4096, description="CEL over `tx` and `features`"
    )
    action: Literal["review", "block"] = "review"


class Decision(_Model):
    review_at: float = Field(default=0.8, ge=0.0, le=1.0)
    block_at: float = Field(default=0.97, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Decision:
        if self.review_at > self.block_at:
            raise ValueError(
                f"decision.reviewAt ({self.review_at}) must not be above decision.blockAt "
                f"({self.block_at})"
            )
        return self


class Rulebook(_Model):
    """The rules and thresholds one track decides with: what a rule rollout moves."""

    rules: tuple[Rule, ...] = Field(default=(), max_length=256)  # as FraudDetectorSpec.rules
    decision: Decision = Decision()

    @classmethod
    def of(cls, spec: FraudDetectorSpec) -> Rulebook:
        return cls(rules=tuple(spec.rules), decision=spec.decision)

    def for_scorer(self) -> tuple[tuple[RuleSpec, ...], DecisionSettings]:
        """The same, as the scorer's own config types (its compiler and version)."""
        rules = tuple(
            RuleSpec(name=r.name, expression=r.expression, action=r.action) for r in self.rules
        )
        decision = DecisionSettings(
            review_at=self.decision.review_at, block_at=self.decision.block_at
        )
        return rules, decision

    @property
    def version(self) -> str:
        """The version the scorers report for it (``fraud_rules_info``, decisions)."""
        return rules_version(*self.for_scorer())

    def same_rules(self, other: Rulebook) -> frozenset[str]:
        """Names of the rules both hold (changed or not): their hit rates are comparable."""
        return frozenset(r.name for r in self.rules) & frozenset(r.name for r in other.rules)


class Scaling(_Model):
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=4, ge=1, le=1000)
    target_cpu_utilization: int = Field(default=70, ge=1, le=100, description="HPA target, percent")
    lag_threshold: int | None = Field(
        default=None,
        ge=1,
        description="consumer lag per replica; uses KEDA when its CRD is installed",
    )

    @model_validator(mode="after")
    def _ordered(self) -> Scaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"scaling.minReplicas ({self.min_replicas}) is above scaling.maxReplicas "
                f"({self.max_replicas})"
            )
        return self


class ResourceList(_Model):
    cpu: Quantity | None = None
    memory: Quantity | None = None


class Resources(_Model):
    requests: ResourceList = ResourceList(cpu="500m", memory="512Mi")
    limits: ResourceList = ResourceList(cpu="1", memory="1Gi")


IMAGES_VERSION = "0.1.0"


@dataclass(frozen=True)
class DefaultImages:
    """The images a FraudDetector runs when its spec names none: the operator's
    ``--scorer-image`` and ``--console-image`` (the chart's ``scorer.image`` and
    ``console.image``), so that a registry mirror is one chart value, not an edit of every
    FraudDetector."""

    scorer: str = f"ghcr.io/fraud-detector/scorer:{IMAGES_VERSION}"
    console: str = f"ghcr.io/fraud-detector/console:{IMAGES_VERSION}"

    def of(self, spec: FraudDetectorSpec) -> dict[str, str]:
        """The image each workload of ``spec`` runs: scorer (its tracks, preflight Jobs and the
        entity stage), sinks and console (when declared)."""
        scorer = spec.scorer.image or self.scorer
        out = {"scorer": scorer}
        if spec.sinks is not None:
            out["sinks"] = spec.sinks.image or scorer
        if spec.console is not None:
            out["console"] = spec.console.image or self.console
        return out


PROJECT_IMAGES = DefaultImages()  # the project's own, from ghcr.io


class Scorer(_Model):
    image: str | None = Field(
        default=None,
        min_length=1,
        description="default: the operator's scorer image (the chart's scorer.image)",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: Resources = Resources()
    alert_carry_fields: list[str] = Field(
        default_factory=list,
        max_length=64,
        description="input fields beyond the transaction contract that alerts carry (others "
        "are dropped); card numbers are masked in every carried value",
    )
    on_model_error: Literal["rulesOnly", "review"] = Field(
        default="rulesOnly",
        description="when the model fails on a batch: decide by the rules alone, or review "
        "everything; decisions carry the reason model_error and fraud_scoring_errors_total "
        "counts the batches",
    )


class RolloutStep(_Model):
    weight: int = Field(ge=1, le=100, description="percent of users on the canary")
    pause: Duration = "5m"


class Analysis(_Model):
    interval: Duration = "1m"
    min_samples: int = Field(default=1000, ge=1)
    max_alert_rate_ratio: float = Field(default=2.0, gt=0.0)
    max_p99_latency_seconds: float = Field(default=0.05, gt=0.0)
    max_error_rate: float = Field(default=0.01, ge=0.0, le=1.0)
    max_score_psi: float = Field(
        default=0.25, gt=0.0, description="population stability index of the score histogram"
    )
    max_lag_growth: int = Field(
        default=10000, ge=0, description="messages the candidate's consumer lag may grow by"
    )
    max_block_share: float = Field(
        default=0.05,
        ge=0.0,
        le=1.0,
        description="share of the candidate's decisions that may be block; above it the "
        "analysis fails and a promote annotation is refused (a guard against a rule or "
        "threshold that blocks everyone, caught in shadow before it acts)",
    )
    max_rule_hit_rate_ratio: float = Field(
        default=3.0,
        gt=0.0,
        description="a rule's hit rate on the candidate against the rule of the same name on "
        "stable (new rules are judged by the alert-rate ratio and the block share)",
    )
    failure_limit: int = Field(default=2, ge=1)


class Shadow(_Model):
    duration: Duration = "10m"


class Rollout(_Model):
    """How a new model version, and a rule or threshold change, goes live: preflight, optional
    shadow, canary steps, then promotion; analysis failures beyond the limit roll back. Manual
    overrides: ``paused`` here, or the annotations ``frauddetection.io/promote`` /
    ``frauddetection.io/abort``."""

    rules: Literal["staged", "immediate"] = Field(
        default="staged",
        description="staged: rule and threshold changes roll out like models (the candidate "
        "rules run in the shadow and canary tracks, stable keeps the old ones until promotion); "
        "immediate: they are hot-reloaded into every track at once",
    )
    shadow: Shadow | None = None
    steps: list[RolloutStep] = Field(default_factory=list)
    analysis: Analysis = Analysis()
    paused: bool = Field(default=False, description="hold the rollout where it is")
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
        description="Prometheus for analysis (http or https); default: the operator's setting",
    )


class SecretKeyRef(_Model):
    secret_name: DnsName
    key: str = Field(min_length=1)


class WebhookSink(_Model):
    """Alerts posted to a chat or incident webhook (Slack-compatible, or the decision as JSON),
    with retries, a circuit breaker and a rate limit; undeliverable ones are dead-lettered."""

    url_secret: SecretKeyRef = Field(description="Secret key holding the webhook URL")
    min_action: Literal["review", "block"] = "review"
    style: Literal["slack", "json"] = "slack"
    rate_per_second: float = Field(default=5.0, gt=0.0, le=1000.0)


class PostgresSink(_Model):
    """Every decision as a case, alerts with their transaction, analysts' labels from
    ``topics.labels``, and the audit trail, in PostgreSQL."""

    dsn_secret: SecretKeyRef = Field(
        description="Secret key holding the runtime's postgresql:// DSN (a login in role "
        "fraud_case_writer: no DDL, INSERT-only on the audit trail)"
    )
    migration_dsn_secret: SecretKeyRef | None = Field(
        default=None,
        description="Secret key holding the schema owner's DSN: the sink applies the "
        "migrations with it at start. Without it, run `fraud-cases migrate` yourself",
    )


class NetworkPolicy(_Model):
    """The scorers' NetworkPolicy: ingress only to the metrics port; egress only to DNS, the
    Kafka bootstrap ports and the model server's port (plus ``extraEgressPorts``)."""

    enabled: bool = True
    extra_egress_ports: list[Annotated[int, Field(ge=1, le=65535)]] = Field(
        default_factory=list, description="e.g. brokers advertising another port than bootstrap"
    )


class EntityStage(_Model):
    """The entity stage's workload, deployed when ``features`` aggregate per another entity
    than the user or from labels (docs/features.md)."""

    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(
        default=4, ge=1, le=1000, description="no more than the by-entity topic's partitions"
    )
    target_cpu_utilization: int = Field(default=70, ge=1, le=100, description="HPA target, percent")
    resources: Resources = Resources(
        requests=ResourceList(cpu="250m", memory="512Mi"),
        limits=ResourceList(cpu="1", memory="2Gi"),
    )

    @model_validator(mode="after")
    def _ordered(self) -> EntityStage:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"entityStage.minReplicas ({self.min_replicas}) is above "
                f"entityStage.maxReplicas ({self.max_replicas})"
            )
        return self


class Sinks(_Model):
    """Where decisions and alerts go besides Kafka. Each sink runs as its own Deployment (one
    pod) consuming the output topics, so the scorers never wait on HTTP or SQL."""

    webhook: WebhookSink | None = None
    postgres: PostgresSink | None = None
    image: str | None = Field(default=None, description="default: the scorer's image")
    resources: Resources = Resources(
        requests=ResourceList(cpu="50m", memory="128Mi"),
        limits=ResourceList(cpu="500m", memory="256Mi"),
    )


class ConsoleProxy(_Model):
    """Identities from an OIDC proxy (oauth2-proxy, Pomerium...) in front of the console."""

    user_header: str = Field(default="X-Forwarded-Email", min_length=1)
    groups_header: str = Field(default="X-Forwarded-Groups", min_length=1)
    trusted_proxies: list[Annotated[str, Field(min_length=1, max_length=43)]] = Field(
        min_length=1,
        max_length=32,
        description="CIDRs the proxy connects from (its pods' range); identity headers from "
        "any other address are refused",
    )
    groups: dict[str, Literal["viewer", "analyst", "admin"]] = Field(
        min_length=1, description="the proxy's group -> console role; users in none are refused"
    )

    @model_validator(mode="after")
    def _cidrs(self) -> ConsoleProxy:
        for cidr in self.trusted_proxies:
            try:
                ip_network(cidr)
            except ValueError as exc:
                raise ValueError(f"console.proxy.trustedProxies: {exc}") from None
        return self


class ConsoleAccess(_Model):
    """Who may open a connection to the console's port (its NetworkPolicy); the metrics
    port stays open to Prometheus. Nothing set: any pod in the FraudDetector's namespace."""

    namespaces: list[DnsName] = Field(
        default_factory=list, description="namespaces whose pods may connect (an ingress "
        "controller's, the OIDC proxy's)",
    )  # fmt: skip
    pod_labels: dict[str, str] = Field(
        default_factory=dict, description="pods in this namespace with these labels may connect"
    )


class Console(_Model):
    """The analyst console (docs/console.md) over ``sinks.postgres``'s case store: a
    Deployment, its Service, a disruption budget, a NetworkPolicy and metrics."""

    image: str | None = Field(
        default=None,
        min_length=1,
        description="default: the operator's console image (the chart's console.image)",
    )
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    replicas: int = Field(default=2, ge=1, le=20)
    dsn_secret: SecretKeyRef = Field(
        description="Secret key holding the console's postgresql:// DSN (a login in role "
        "fraud_console: reads cases, writes labels only through the audited functions)"
    )
    session_secret: SecretKeyRef = Field(
        description="Secret key holding 32+ random characters that sign the session cookie "
        "(the same for every replica)"
    )
    auth: Literal["proxy", "builtin"] = Field(
        default="proxy",
        description="proxy: identities from an OIDC proxy (console.proxy); builtin: the "
        "console's own login (console.usersSecret)",
    )
    proxy: ConsoleProxy | None = None
    users_secret: SecretKeyRef | None = Field(
        default=None,
        description='builtin: Secret key holding the users as JSON, {"alice": {"password": '
        '"<fraud-console hash-password>", "role": "analyst"}}',
    )
    secure_cookies: bool = Field(
        default=True, description="cookies only over https (the console sits behind TLS)"
    )
    publish_labels: bool = Field(
        default=True, description="labels go to topics.labels too (training, label features)"
    )
    access: ConsoleAccess = ConsoleAccess()
    resources: Resources = Resources(
        requests=ResourceList(cpu="100m", memory="192Mi"),
        limits=ResourceList(cpu="1", memory="512Mi"),
    )

    @model_validator(mode="after")
    def _auth_complete(self) -> Console:
        if self.auth == "proxy" and self.proxy is None:
            raise ValueError("console.auth proxy needs console.proxy (trustedProxies, groups)")
        if self.auth == "builtin" and self.users_secret is None:
            raise ValueError("console.auth builtin needs console.usersSecret")
        return self


class Toleration(_Model):
    key: str | None = None
    operator: Literal["Equal", "Exists"] = "Equal"
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class Placement(_Model):
    """Where every pod of the detector runs (scorers, preflight Jobs, sinks, the entity stage,
    the console): dedicated node pools, tainted nodes, priority."""

    node_selector: dict[str, str] = Field(default_factory=dict, max_length=32)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: dict[str, Any] | None = Field(
        default=None,
        description="a pod affinity as in a pod spec (nodeAffinity, podAffinity, "
        "podAntiAffinity); the scorers' own anti-affinity stays unless this sets one",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    priority_class_name: str | None = Field(default=None, min_length=1, max_length=253)


class FraudDetectorSpec(_Model):
    kafka: Kafka
    topics: Topics
    consumer_group: str | None = Field(
        default=None, min_length=1, description="defaults to fraud-scorer-<namespace>-<name>"
    )
    model: ModelRef
    features: dict[str, Any] | None = Field(
        default=None,
        description="a declared feature set (docs/features.md: features, historyHours, "
        "maxEventsPerEntity), checked by the operator; none: the shipped v1 set. The model "
        "must have been trained on the same set",
        json_schema_extra={"x-kubernetes-preserve-unknown-fields": True},
    )
    rules: list[Rule] = Field(default_factory=list, max_length=256)
    decision: Decision = Decision()
    scaling: Scaling = Scaling()
    scorer: Scorer = Scorer()
    entity_stage: EntityStage = EntityStage()
    rollout: Rollout | None = None
    sinks: Sinks | None = None
    console: Console | None = None
    placement: Placement = Placement()
    network_policy: NetworkPolicy = NetworkPolicy()

    @model_validator(mode="after")
    def _unique_rules(self) -> FraudDetectorSpec:
        names = [r.name for r in self.rules]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"rule names must be unique; repeated: {', '.join(dupes)}")
        return self

    @model_validator(mode="after")
    def _console_has_cases(self) -> FraudDetectorSpec:
        if self.console is not None and (self.sinks is None or self.sinks.postgres is None):
            raise ValueError(
                "console needs sinks.postgres: it serves the case store that sink fills"
            )
        return self
