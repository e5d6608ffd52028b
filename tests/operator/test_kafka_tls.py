"""Kafka transports a FraudDetector can declare: public CAs, private CAs (one or several),
mutual TLS and pass-through librdkafka settings, from the spec to the files a pod reads and to
a real librdkafka client."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaException, Producer
from fraud_operator import builders
from fraud_operator.spec import FraudDetectorSpec
from fraud_operator.validation import required_secrets
from fraud_runtime.settings import KafkaSettings
from fraud_scorer.config import load_settings
from pydantic import ValidationError

from tests.operator.conftest import make_detector, spec_dict

MTLS = {
    "trustedCertificates": [{"secretName": "cluster-ca"}, {"secretName": "old-ca"}],
    "clientCertificate": {"secretName": "fraud-user", "certificate": "user.crt", "key": "user.key"},
}


def _volumes(d: Any) -> dict[str, dict[str, Any]]:
    pod = builders.deployment(d)["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    return {v["name"]: {**v, "mountPath": mounts.get(v["name"])} for v in pod["volumes"]}


def test_tls_with_public_cas_needs_no_secret() -> None:
    d = make_detector(kafka={"bootstrapServers": "kafka.example.com:9093", "tls": {}})
    kafka = builders.scorer_config(d)["kafka"]
    assert kafka["security_protocol"] == "SSL" and "ssl_ca_location" not in kafka
    assert "kafka-ca" not in _volumes(d)
    assert required_secrets(d.spec) == {}


def test_mutual_tls_mounts_the_key_for_the_pod_only_and_bundles_several_cas(
    tmp_path: Path,
) -> None:
    d = make_detector(kafka={"bootstrapServers": "k:9093", "tls": MTLS, "extra": {
        "client.rack": "eu-west-1a", "socket.keepalive.enable": True}})  # fmt: skip
    volumes = _volumes(d)
    client = volumes["kafka-client"]
    assert client["secret"]["secretName"] == "fraud-user"
    assert client["secret"]["defaultMode"] == 0o440
    assert {i["key"]: i["path"] for i in client["secret"]["items"]} == {
        "user.crt": "tls.crt",
        "user.key": "tls.key",
    }
    assert client["mountPath"] == "/etc/fraud/kafka-client"
    assert required_secrets(d.spec) == {
        "cluster-ca": {"ca.crt"},
        "old-ca": {"ca.crt"},
        "fraud-user": {"user.crt", "user.key"},
    }
    path = tmp_path / "scorer.yaml"
    path.write_text(builders.config_map(d)["data"][builders.CONFIG_FILE])
    kafka = load_settings(path).kafka  # the scorer's own loader
    assert kafka.ssl_ca_files == [
        "/etc/fraud/kafka-ca/cluster-ca-ca.crt",
        "/etc/fraud/kafka-ca/old-ca-ca.crt",
    ]
    assert kafka.ssl_certificate_location == "/etc/fraud/kafka-client/tls.crt"
    assert kafka.ssl_key_location == "/etc/fraud/kafka-client/tls.key"
    assert kafka.extra == {"client.rack": "eu-west-1a", "socket.keepalive.enable": True}


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ({"ssl.key.location": "/x"}, "set by the operator"),
        ({"sasl.password": "p"}, "set by the operator"),
        ({"bootstrap.servers": "elsewhere:9092"}, "set by the operator"),
        ({"sasl.oauthbearer.client.secret": "s"}, "set by the operator"),
        ({"ssl_engine_callback_data.password": "p"}, "credential"),
    ],
)
def test_kafka_extra_refuses_managed_settings_and_credentials(
    extra: dict[str, Any], message: str
) -> None:
    kafka = {"bootstrapServers": "k:9092", "extra": extra}
    with pytest.raises(ValidationError, match=message):
        FraudDetectorSpec.model_validate(spec_dict(kafka=kafka))


def _certificates(tmp_path: Path) -> dict[str, Path]:
    """A CA, a second CA, and a client certificate the first signed, as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = dt.datetime.now(dt.UTC)

    def cert(name: str, key: Any, issuer: str, signer: Any, ca: bool) -> x509.Certificate:
        return (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=1))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
            .sign(signer, hashes.SHA256())
        )

    out: dict[str, Path] = {}
    ca_key, other_key, client_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    pems = {
        "ca": cert("ca", ca_key, "ca", ca_key, True),
        "other-ca": cert("other-ca", other_key, "other-ca", other_key, True),
        "client": cert("fraud-scorer", client_key, "ca", ca_key, False),
    }
    for name, c in pems.items():
        out[name] = tmp_path / f"{name}.crt"
        out[name].write_bytes(c.public_bytes(serialization.Encoding.PEM))
    for name, key in (("client-key", client_key), ("wrong-key", other_key)):
        out[name] = tmp_path / f"{name}.pem"
        out[name].write_bytes(key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))  # fmt: skip
    return out


def test_the_settings_are_what_librdkafka_loads(tmp_path: Path) -> None:
    """A real librdkafka client loads the CA bundle, the certificate and its key when it is
    created (no broker needed), and refuses a key that is not the certificate's."""
    files = _certificates(tmp_path)
    settings = KafkaSettings(
        bootstrap_servers="127.0.0.1:1", security_protocol="SSL",
        ssl_ca_files=[str(files["ca"]), str(files["other-ca"])],
        ssl_certificate_location=str(files["client"]), ssl_key_location=str(files["client-key"]),
    )  # fmt: skip
    conf = settings.client_config()
    assert conf["ssl.ca.pem"].count("BEGIN CERTIFICATE") == 2
    Producer(conf).flush(0)  # loads and checks the files
    wrong = {**conf, "ssl.key.location": str(files["wrong-key"])}
    with pytest.raises(KafkaException, match="key values mismatch"):
        Producer(wrong)
    with pytest.raises(ValidationError, match="go together"):
        KafkaSettings(ssl_certificate_location=str(files["client"]))
