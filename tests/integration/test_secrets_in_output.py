"""No credential reaches any output, whatever goes wrong at start or while running: every
process is started with sentinel secrets (as the operator passes them, from Secrets, in the
environment) in configurations that fail in different ways, and its whole output is searched."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from fraud_devtools.mock_cluster import MockCluster

from tests.integration.harness import TOPICS, produce

pytestmark = pytest.mark.integration
SENTINEL = "s3ntinel-Zq81"


def run(
    module: str,
    config: dict[str, object],
    env: dict[str, str],
    tmp_path: Path,
    seconds: float | None = None,
) -> tuple[int, str]:
    """Run ``python -m module --config`` to its end, or SIGTERM it after ``seconds``."""
    import os

    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", module, "--config", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, **env},
    )
    if seconds is not None:
        time.sleep(seconds)
        proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=90)
    return proc.returncode, out.decode(errors="replace")


def test_a_refused_kafka_configuration_does_not_print_the_password(tmp_path: Path) -> None:
    config = {"kafka": {"security_protocol": "SASL_SSL", "sasl_mechanism": "PLAIN"}}
    code, out = run("fraud_scorer", config, {"FRAUD_KAFKA__SASL_PASSWORD": SENTINEL}, tmp_path)
    assert code == 2 and "needs sasl_mechanism, sasl_username" in out
    assert SENTINEL not in out


def test_a_refused_webhook_url_is_not_printed(tmp_path: Path) -> None:
    config = {"sink": "webhook", "kafka": {"bootstrap_servers": "127.0.0.1:1"}}
    env = {"FRAUD_WEBHOOK__URL": f"ftp://hooks.example/{SENTINEL}"}
    code, out = run("fraud_sinks", config, env, tmp_path)
    assert code == 2 and "http(s)" in out
    assert SENTINEL not in out


def test_secrets_in_passthrough_kafka_properties_are_masked_in_the_startup_log(
    tmp_path: Path,
) -> None:
    config = {
        "sink": "webhook",
        "kafka": {"bootstrap_servers": "127.0.0.1:1", "extra": {"ssl.key.password": SENTINEL}},
    }
    env = {"FRAUD_WEBHOOK__URL": f"https://hooks.example/{SENTINEL}"}
    code, out = run("fraud_sinks", config, env, tmp_path, seconds=4)
    assert code == 0 and "sink starting" in out and "ssl.key.password" in out
    assert SENTINEL not in out


def test_a_database_that_refuses_the_login_does_not_print_the_dsn(tmp_path: Path) -> None:
    with MockCluster() as cluster:
        for topic in TOPICS.values():
            cluster.create_topic(topic, 1)
        produce(cluster.bootstrap_servers, TOPICS["decisions"], [(b"t1", b"{}")])
        config = {
            "sink": "postgres",
            "kafka": {"bootstrap_servers": cluster.bootstrap_servers},
            "topics": {k: v for k, v in TOPICS.items() if k != "input"},
            "batch": {"retry_max_s": 0.5},
        }
        env = {
            "FRAUD_POSTGRES__DSN": f"postgresql://fraud:{SENTINEL}@127.0.0.1:1/cases",
            "FRAUD_POSTGRES__MIGRATION_DSN": f"postgresql://owner:{SENTINEL}@127.0.0.1:1/cases",
        }
        code, out = run("fraud_sinks", config, env, tmp_path, seconds=8)
    assert "destination down" in out
    assert code == 0 and SENTINEL not in out


def test_a_malformed_dsn_is_a_configuration_error_that_does_not_print_it(tmp_path: Path) -> None:
    config = {"sink": "postgres", "kafka": {"bootstrap_servers": "127.0.0.1:1"}}
    for variable in ("FRAUD_POSTGRES__DSN", "FRAUD_POSTGRES__MIGRATION_DSN"):
        env = {
            "FRAUD_POSTGRES__DSN": "postgresql://fraud@127.0.0.1:1/cases",
            variable: f"postgresql://fraud:{SENTINEL}@[db/cases",
        }
        code, out = run("fraud_sinks", config, env, tmp_path)
        assert code == 2 and f"{variable} cannot be parsed" in out
        assert SENTINEL not in out
