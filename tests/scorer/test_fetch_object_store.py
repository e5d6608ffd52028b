"""The model fetch from object storage (``s3://``, ``gs://``), as the init container runs it: a
real process, reading from S3- and GCS-compatible servers on 127.0.0.1 (moto's server, with its
STS, and gcp-storage-emulator: stand-ins for the clouds, which this machine cannot reach).

The S3 case proves the credential path a pod on EKS has: no key anywhere, only the web-identity
token file and role that IRSA injects; botocore exchanges the token with STS. Without them the
fetch refuses cleanly (exit 2, nothing written). The digest pins the artifact as for https://.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fraud_devtools.local import free_port
from fraud_scorer.model import artifact_digest, load_model

BIN = Path(sys.executable).parent
ROLE = "arn:aws:iam::123456789012:role/fraud-models-reader"


@contextmanager
def _server(args: list[str], port: int, log: Path) -> Iterator[str]:
    with log.open("wb") as out:
        proc = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(url, timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # it answers
            except OSError:
                assert proc.poll() is None, log.read_text()
                assert time.monotonic() < deadline, log.read_text()
                time.sleep(0.1)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)


def _fetch(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """``python -m fraud_scorer.fetch`` with nothing of this machine's environment but PATH:
    no AWS or Google credentials, config files or caches."""
    base = {"PATH": os.environ["PATH"], "HOME": env.pop("HOME")}
    return subprocess.run(
        [sys.executable, "-m", "fraud_scorer.fetch", *args],
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def s3(tmp_path: Path, model_dir: Path) -> Iterator[str]:
    """moto's S3 and STS on 127.0.0.1, holding the model under s3://models/fraud/v3/."""
    import boto3

    port = free_port()
    cmd = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)]
    with _server(cmd, port, tmp_path / "moto.log") as endpoint:
        store = boto3.client(  # the platform team's upload, with its own (test) keys
            "s3",
            endpoint_url=endpoint,
            region_name="us-east-1",
            aws_access_key_id="platform",
            aws_secret_access_key="platform",
        )
        store.create_bucket(Bucket="models")
        for f in model_dir.iterdir():
            store.upload_file(str(f), "models", f"fraud/v3/{f.name}")
        yield endpoint


def test_s3_with_the_pods_web_identity(s3: str, model_dir: Path, tmp_path: Path) -> None:
    digest = artifact_digest(model_dir)
    token = tmp_path / "token"
    token.write_text("eyJhbGciOiJSUzI1NiJ9.projected-service-account-token.sig")
    identity = {
        "HOME": str(tmp_path),
        "AWS_ENDPOINT_URL": s3,  # S3 and STS both at the stand-in
        "AWS_REGION": "us-east-1",
        # What the EKS pod identity webhook injects for a ServiceAccount with a role-arn.
        "AWS_ROLE_ARN": ROLE,
        "AWS_WEB_IDENTITY_TOKEN_FILE": str(token),
    }
    dest = tmp_path / "models" / "current"
    got = _fetch(dict(identity), "--uri", "s3://models/fraud/v3/", "--digest", digest,
                 "--dest", str(dest))  # fmt: skip
    assert got.returncode == 0, got.stderr
    assert load_model(dest, digest=digest).version == "test-1"
    assert "projected-service-account-token" not in got.stdout + got.stderr

    # No identity at all: a clean refusal that says why, nothing written.
    bare = {k: v for k, v in identity.items() if not k.startswith("AWS_ROLE")}
    bare.pop("AWS_WEB_IDENTITY_TOKEN_FILE")
    other = tmp_path / "other"
    got = _fetch(bare, "--uri", "s3://models/fraud/v3", "--digest", digest, "--dest", str(other))
    assert got.returncode == 2 and "NoCredentialsError" in got.stderr, got.stderr
    assert not other.exists()

    # The digest pins what is read: a wrong one, or a folder that is not there, is refused.
    wrong = "sha256:" + "0" * 64
    got = _fetch(dict(identity), "--uri", "s3://models/fraud/v3", "--digest", wrong,
                 "--dest", str(other))  # fmt: skip
    assert got.returncode == 2 and "not the artifact that was approved" in got.stderr
    got = _fetch(dict(identity), "--uri", "s3://models/fraud/v9", "--digest", digest,
                 "--dest", str(other))  # fmt: skip
    assert got.returncode == 2 and "s3://models/fraud/v9/manifest.json does not exist" in got.stderr
    assert not other.exists()


def test_gs(model_dir: Path, tmp_path: Path) -> None:
    """gs:// through gcsfs (on GKE its credentials are Workload Identity's, from the metadata
    server, which this machine does not have: the emulator takes anonymous reads)."""
    port = free_port()
    cmd = [str(BIN / "gcp-storage-emulator"), "start", "--host=127.0.0.1", f"--port={port}",
           "--in-memory"]  # fmt: skip
    env = {"HOME": str(tmp_path)}
    with _server(cmd, port, tmp_path / "gcs.log") as endpoint:
        # The platform team's upload, through the JSON API.
        make = urllib.request.Request(
            f"{endpoint}/storage/v1/b?project=test",
            json.dumps({"name": "models"}).encode(),
            {"Content-Type": "application/json"},
        )
        urllib.request.urlopen(make).close()
        for f in model_dir.iterdir():
            name = urllib.parse.quote(f"fraud/v3/{f.name}", safe="")
            url = f"{endpoint}/upload/storage/v1/b/models/o?uploadType=media&name={name}"
            put = urllib.request.Request(
                url, f.read_bytes(), {"Content-Type": "application/octet-stream"}
            )
            urllib.request.urlopen(put).close()
        digest, dest = artifact_digest(model_dir), tmp_path / "current"
        got = _fetch({**env, "STORAGE_EMULATOR_HOST": endpoint}, "--uri",
                     "gs://models/fraud/v3", "--digest", digest, "--dest", str(dest))  # fmt: skip
        assert got.returncode == 0, got.stderr
        assert load_model(dest, digest=digest).version == "test-1"


def test_object_store_uris_are_checked_before_any_pod_starts() -> None:
    from fraud_scorer.config import model_uri_problem

    assert model_uri_problem("s3://models/fraud/v3") is None
    assert model_uri_problem("gs://models/fraud/v3/") is None
    assert "credentials" in (model_uri_problem("s3://AKIA:secret@models/v3") or "")
    assert "BUCKET/PATH" in (model_uri_problem("s3:///fraud/v3") or "")
    assert "BUCKET/PATH" in (model_uri_problem("gs://Models_/v3") or "")
    assert "no query string" in (model_uri_problem("s3://models/v3?versionId=2") or "")
