"""What each image installs, in a clean virtualenv per image: the Dockerfile's own `uv sync`
line for that image, run here from the lock (without the container). Every console script
there either runs or names the extra it needs, the development kit is in no production image,
and the operator's has no numpy or onnxruntime. Prints each install's site-packages size
(docs/deploy.md's image sizes come from here). Laptop installs (`fraud-rules`, `fraudctl`) take
their extra from the same lock."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("fraud-scorer", "fraud-sink", "fraud-cases", "fraud-train")
# The dev group's uv: the version scripts/uv-bootstrap.txt pins.
UV = Path(sys.executable).parent / "uv"


def image_sync(image: str) -> list[str]:
    """The ``uv sync`` arguments of the Dockerfile's build stage for ``image``."""
    dockerfile = (ROOT / "Dockerfile").read_text()
    stage = re.search(rf"^FROM source AS build-{image}\n(?:.*\n)*?RUN uv (sync .*)$", dockerfile,
                      re.MULTILINE)  # fmt: skip
    assert stage, f"no build-{image} stage with a `RUN uv sync` line"
    return shlex.split(stage.group(1))


def install(tmp: Path, *args: str) -> Path:
    """A fresh virtualenv synced from uv.lock with ``uv`` ``args``; its bin folder."""
    venv = tmp / "venv"
    env = {**os.environ, "UV_PROJECT_ENVIRONMENT": str(venv), "UV_PYTHON_DOWNLOADS": "never"}
    env.pop("VIRTUAL_ENV", None)
    subprocess.run(
        [str(UV), *args, "--quiet", "--python", sys.executable], cwd=ROOT, env=env, check=True
    )
    size = sum(f.stat().st_size for f in (venv / "lib").rglob("*") if f.is_file())
    print(f"\n{tmp.name}: {size / 2**20:.0f} MiB of site-packages for uv {' '.join(args)}")
    return venv / "bin"


def laptop(extra: str) -> list[str]:
    return ["sync", "--locked", "--no-dev", "--no-editable", "--extra", extra]


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(bin_dir / args[0]), *args[1:]],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def imports(bin_dir: Path, module: str) -> bool:
    code = f"import importlib.util, sys; sys.exit(importlib.util.find_spec({module!r}) is None)"
    return run(bin_dir, "python", "-c", code).returncode == 0


def test_scorer_image(tmp_path: Path) -> None:
    """The scorer image also runs the sinks and the analysts' CLI; training is not there."""
    bin_dir = install(tmp_path, *image_sync("scorer"))
    for script in ("fraud-scorer", "fraud-sink", "fraud-cases"):
        result = run(bin_dir, script, "--help")
        assert result.returncode == 0, (script, result.stderr)
    result = run(bin_dir, "fraud-train", "--help")
    assert result.returncode == 2
    assert "needs the 'training' extra" in result.stderr
    assert not (bin_dir / "fraud-demo").exists() and not (bin_dir / "fraud-produce").exists()
    assert not imports(bin_dir, "fraud_devtools")
    # Its init container fetches s3:// and gs:// models.
    assert imports(bin_dir, "s3fs") and imports(bin_dir, "gcsfs")


def test_operator_image(tmp_path: Path) -> None:
    """The operator image: the operator imports, nothing heavy is installed, and each product
    script says which extra it would need."""
    bin_dir = install(tmp_path, *image_sync("operator"))
    result = run(bin_dir, "python", "-c", "import fraud_operator.handlers, fraud_operator.crd")
    assert result.returncode == 0, result.stderr
    assert not imports(bin_dir, "numpy") and not imports(bin_dir, "onnxruntime")
    assert not imports(bin_dir, "fraud_devtools")
    operator = run(bin_dir, "fraud-operator", "--help")  # the image's entrypoint
    assert operator.returncode == 0 and "--allowed-image" in operator.stdout, operator.stderr
    wanted = {
        "fraud-scorer": "scorer",
        "fraud-sink": "sinks",
        "fraud-cases": "sinks",
        "fraud-console": "console",
    }
    for script, extra in {**wanted, "fraud-train": "training", "fraud-rules": "rules"}.items():
        result = run(bin_dir, script, "--help")
        assert result.returncode == 2, (script, result.stdout, result.stderr)
        assert f"needs the '{extra}' extra" in result.stderr, (script, result.stderr)


def test_console_installs_without_the_scorer(tmp_path: Path) -> None:
    """The console: its web stack and the case store's driver, no numpy or onnxruntime; the
    built-in login's password hash made from stdin."""
    bin_dir = install(tmp_path, *image_sync("console"))
    assert run(bin_dir, "fraud-console", "--help").returncode == 0
    hashed = subprocess.run(
        [str(bin_dir / "fraud-console"), "hash-password"],
        input="s3cret\n", capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert hashed.stdout.startswith("scrypt$") and "s3cret" not in hashed.stdout
    for heavy in ("numpy", "onnxruntime", "fraud_devtools"):
        assert not imports(bin_dir, heavy), heavy


def test_tools_image(tmp_path: Path) -> None:
    """The kind tools image: training and the development kit's producer."""
    bin_dir = install(tmp_path, *image_sync("tools"))
    for script in ("fraud-train", "fraud-produce", "fraud-demo", "fraud-scorer"):
        result = run(bin_dir, script, "--help")
        assert result.returncode == 0, (script, result.stderr)


def test_rules_check_installs_light(tmp_path: Path) -> None:
    """``fraud-rules check`` in a CI or GitOps job: the base and the 'rules' extra only (no
    numpy, onnxruntime or Kafka client), and it checks a FraudDetector manifest."""
    bin_dir = install(tmp_path, *laptop("rules"))
    result = run(bin_dir, "fraud-rules", "check", str(ROOT / "examples" / "minimal.yaml"))
    assert result.returncode == 0, (result.stdout, result.stderr)
    assert "FraudDetector default/minimal: 1 rule compiles" in result.stdout
    for heavy in ("numpy", "onnxruntime", "confluent_kafka", "fraud_devtools"):
        assert not imports(bin_dir, heavy), heavy


def test_the_dockerfile_copies_every_package_the_distribution_builds() -> None:
    """Every folder ``pyproject.toml`` finds packages in is copied into the images' source
    stage (``rules/`` once was not: the images had no ``fraud-rules``), and every image
    target named in its header exists."""
    import re
    import tomllib

    folders = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]["find"]["where"]
    dockerfile = (ROOT / "Dockerfile").read_text()
    copied = set(re.findall(r"^COPY (\S+) \1$", dockerfile, re.MULTILINE))
    assert set(folders) <= copied, set(folders) - copied
    named = set(re.findall(r"--target (\w+)", dockerfile))
    stages = set(re.findall(r"^FROM \S+ AS (\w+)$", dockerfile, re.MULTILINE))
    assert named == {"scorer", "operator", "tools", "console"} and named <= stages
    # Each image starts one of the distribution's commands.
    scripts = {
        name
        for project in ("pyproject.toml", "devtools/pyproject.toml")
        for name in tomllib.loads((ROOT / project).read_text())["project"]["scripts"]
    }
    entrypoints = re.findall(r'^ENTRYPOINT \["([^"]+)"', dockerfile, re.MULTILINE)
    assert entrypoints and set(entrypoints) <= scripts, set(entrypoints) - scripts


def test_fraudctl_installs_light(tmp_path: Path) -> None:
    """``pip install 'fraud-detector[ctl]'`` on a laptop: fraudctl and its kubectl plugin name,
    without the operator's kopf or anything of the scorer's."""
    bin_dir = install(tmp_path, *laptop("ctl"))
    for script in ("fraudctl", "kubectl-fraud"):
        result = run(bin_dir, script, "--help")
        assert result.returncode == 0 and "promote" in result.stdout, (script, result.stderr)
    for heavy in ("numpy", "onnxruntime", "kopf", "confluent_kafka", "fraud_devtools"):
        assert not imports(bin_dir, heavy), heavy


def test_one_hashed_lock_that_matches_the_declared_ranges() -> None:
    """The product declares ranges (it installs beside other libraries); uv.lock pins every
    package with its hashes and is current with pyproject.toml; make, CI and the Dockerfile all
    install from it with the uv that scripts/uv-bootstrap.txt pins by hash."""
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    declared = list(project["project"]["dependencies"]) + [
        r for extra in project["project"]["optional-dependencies"].values() for r in extra
    ]
    pinned = [r for r in declared if "==" in r]
    assert not pinned, f"the product pins exact versions: {pinned}"
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    for package in lock["package"]:
        if package.get("source", {}).get("registry"):
            files = package.get("wheels", []) + ([package["sdist"]] if "sdist" in package else [])
            assert files and all(f["hash"].startswith("sha256:") for f in files), package["name"]
    version = project["tool"]["uv"]["required-version"].removeprefix("==")
    bootstrap = (ROOT / "scripts/uv-bootstrap.txt").read_text()
    assert f"uv=={version} " in bootstrap and "--hash=sha256:" in bootstrap
    assert f"UV_VERSION := {version}" in (ROOT / "Makefile").read_text()
    assert f"uv=={version}" in project["dependency-groups"]["dev"]
    assert "uv sync --locked" in (ROOT / "Makefile").read_text().replace("$(UV)", "uv")
    check = subprocess.run([str(UV), "lock", "--check"], cwd=ROOT, capture_output=True,
                           text=True, check=False)  # fmt: skip
    assert check.returncode == 0, "uv.lock is not current: run `make lock`\n" + check.stderr
