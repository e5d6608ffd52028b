"""The init container's model fetch, over real HTTP and HTTPS servers on 127.0.0.1 and file://.

The artifact is pinned by its digest (sha256 of manifest.json, which names model.onnx's
sha256): both files are verified, so neither the graph nor the way it is read can be swapped.
"""

from __future__ import annotations

import functools
import hashlib
import json
import shutil
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import trustme
from fraud_scorer.fetch import main
from fraud_scorer.model import artifact_digest, load_model


def _serve(root: Path, tls: ssl.SSLContext | None = None) -> tuple[ThreadingHTTPServer, str]:
    handler = functools.partial(SimpleHTTPRequestHandler, directory=str(root))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    scheme = "https" if tls else "http"
    return server, f"{scheme}://127.0.0.1:{server.server_address[1]}"


def _stop(server: ThreadingHTTPServer) -> None:
    server.shutdown()
    server.server_close()


@pytest.fixture
def www(model_dir: Path, tmp_path: Path) -> Path:
    root = tmp_path / "www"
    shutil.copytree(model_dir, root / "m1")
    return root


@pytest.fixture
def served(www: Path) -> Iterator[str]:
    server, base = _serve(www)
    yield f"{base}/m1/"
    _stop(server)


@pytest.fixture
def ca(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> trustme.CA:
    """A private CA the fetch trusts (through SSL_CERT_FILE, as a cluster's CA bundle would)."""
    authority = trustme.CA()
    bundle = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(str(bundle))
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    return authority


@pytest.fixture
def served_tls(www: Path, ca: trustme.CA) -> Iterator[str]:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    server, base = _serve(www, context)
    yield f"{base}/m1/"
    _stop(server)


def fetch(*args: str) -> int:
    return main(list(args))


def test_fetches_and_verifies_over_https(served_tls: str, model_dir: Path, tmp_path: Path) -> None:
    digest = artifact_digest(model_dir)
    dest = tmp_path / "models" / "current"
    assert fetch("--uri", served_tls, "--digest", digest, "--dest", str(dest)) == 0
    assert load_model(dest, digest=digest).version == "test-1"
    # Fetching again replaces the directory atomically.
    assert fetch("--uri", served_tls, "--digest", digest, "--dest", str(dest)) == 0
    assert sorted(p.name for p in dest.parent.iterdir()) == ["current"]


def test_plain_http_only_when_allowed(
    served: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest, dest = artifact_digest(model_dir), tmp_path / "current"
    assert fetch("--uri", served, "--digest", digest, "--dest", str(dest)) == 2
    assert "unencrypted" in capsys.readouterr().err and not dest.exists()
    assert fetch("--uri", served, "--digest", digest, "--dest", str(dest), "--allow-http") == 0


def test_a_wrong_digest_writes_nothing(
    served_tls: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = tmp_path / "models" / "current"
    assert fetch("--uri", served_tls, "--digest", "sha256:" + "0" * 64, "--dest", str(dest)) == 2
    assert "the FraudDetector pins sha256:0000" in capsys.readouterr().err
    assert not dest.exists()
    # The old meaning (model.onnx's own hash) is refused with a pointer to the new one.
    onnx_sha = hashlib.sha256((model_dir / "model.onnx").read_bytes()).hexdigest()
    assert fetch("--uri", served_tls, "--digest", f"sha256:{onnx_sha}", "--dest", str(dest)) == 2
    assert "the digest is the sha256 of manifest.json" in capsys.readouterr().err


def test_the_manifest_is_pinned_too(
    www: Path, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Flipping the positive class index inverts every score while model.onnx is untouched:
    the digest over the manifest catches it."""
    digest = artifact_digest(model_dir)
    manifest = json.loads((www / "m1" / "manifest.json").read_text())
    manifest["positive_class_index"] = 0
    (www / "m1" / "manifest.json").write_text(json.dumps(manifest))
    dest = tmp_path / "current"
    assert fetch("--uri", (www / "m1").as_uri(), "--digest", digest, "--dest", str(dest)) == 2
    assert "not the artifact that was approved" in capsys.readouterr().err
    assert not dest.exists()
    # And a graph swapped under an untouched manifest is caught by the manifest's sha256.
    shutil.copy(model_dir / "manifest.json", www / "m1" / "manifest.json")
    (www / "m1" / "model.onnx").write_bytes(b"not a model")
    assert fetch("--uri", (www / "m1").as_uri(), "--digest", digest, "--dest", str(dest)) == 2
    assert "its manifest names" in capsys.readouterr().err


class _Redirect(BaseHTTPRequestHandler):
    target = ""

    def do_GET(self) -> None:
        self.send_response(302)
        self.send_header("Location", self.target + self.path)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_no_downgrade_on_redirect(
    served: str, ca: trustme.CA, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An https URL that redirects to http:// is refused, even where http:// is allowed for
    the URL given: the scheme asked for is the weakest accepted. A redirect to file:// too."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ca.issue_cert("127.0.0.1").configure_cert(context)
    digest, dest = artifact_digest(model_dir), tmp_path / "current"
    plain = served.removesuffix("/m1/")
    for target in (plain, "file://"):
        handler = type("R", (_Redirect,), {"target": target})
        server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        server.socket = context.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            uri = f"https://127.0.0.1:{server.server_address[1]}/m1/"
            args = ("--digest", digest, "--dest", str(dest), "--allow-http")
            assert fetch("--uri", uri, *args) == 2
        finally:
            _stop(server)
        assert "refusing a redirect to another scheme" in capsys.readouterr().err
    assert not dest.exists()


def test_credentials_never_shown(
    served_tls: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest, dest = artifact_digest(model_dir), tmp_path / "current"
    secret = "s3cr3t-T0KEN"
    with_user = served_tls.replace("https://", f"https://reader:{secret}@")
    assert fetch("--uri", with_user, "--digest", digest, "--dest", str(dest)) == 2
    assert fetch("--uri", served_tls + f"?sig={secret}", "--digest", digest, "--dest", "x") == 2
    # A server that is not there: the error names the host, never the token.
    gone = f"https://u:{secret}@127.0.0.1:9/m/"
    assert fetch("--uri", gone, "--digest", digest, "--dest", str(dest)) == 2
    out = capsys.readouterr()
    assert "credentials" in out.err and "no query string" in out.err
    assert secret not in out.err + out.out


def test_file_uri_and_bad_schemes(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    digest = artifact_digest(model_dir)
    dest = tmp_path / "current"
    assert fetch("--uri", model_dir.as_uri(), "--digest", digest, "--dest", str(dest)) == 0
    assert fetch("--uri", "ftp://example/m", "--digest", digest, "--dest", str(dest)) == 2
    assert "unsupported model URI scheme 'ftp'" in capsys.readouterr().err
    nope = (tmp_path / "nope").as_uri()
    assert fetch("--uri", nope, "--digest", digest, "--dest", str(dest)) == 2


def test_preflight_loads_the_model_like_the_scorer(
    model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fraud_scorer.preflight import main as preflight

    digest = artifact_digest(model_dir)
    assert preflight(["--uri", model_dir.as_uri(), "--digest", digest]) == 0
    assert "model test-1 loads: 14 features" in capsys.readouterr().out
    # A manifest for another feature set, pinned by its own digest: fetched, refused on load.
    other = tmp_path / "other"
    shutil.copytree(model_dir, other)
    manifest = (
        (other / "manifest.json")
        .read_text()
        .replace('"feature_set_version": "v1"', '"feature_set_version": "v9"')
    )
    (other / "manifest.json").write_text(manifest)
    assert preflight(["--uri", other.as_uri(), "--digest", artifact_digest(other)]) == 2
    assert "feature set 'v9'" in capsys.readouterr().err
