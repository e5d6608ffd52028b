"""What each image installs, in a clean virtualenv per image (the Dockerfiles' pip installs,
without the container): every console script there either runs or names the extra it needs,
the development kit is in no production image, and the operator's has no numpy or onnxruntime.
Prints each install's site-packages size (docs/deploy.md's image sizes come from here)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.packaging
ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ("fraud-scorer", "fraud-sink", "fraud-cases", "fraud-train")


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The product's and the development kit's wheels, built once."""
    out = tmp_path_factory.mktemp("wheels")
    for project in (ROOT, ROOT / "devtools"):
        subprocess.run(
            [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(out), str(project)],
            check=True,
        )
    return {
        "product": next(out.glob("fraud_detector-*.whl")),
        "devtools": next(out.glob("fraud_detector_devtools-*.whl")),
    }


def install(tmp: Path, *requirements: str) -> Path:
    """A fresh virtualenv (no pip of its own) with ``requirements``; its bin folder."""
    venv = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "--python",
            str(py),
            "install",
            "-q",
            "--no-compile",
            "--disable-pip-version-check",
            *requirements,
        ],
        check=True,
    )
    size = sum(f.stat().st_size for f in (venv / "lib").rglob("*") if f.is_file())
    print(f"\n{tmp.name}: {size / 2**20:.0f} MiB of site-packages for {requirements}")
    return venv / "bin"


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


def test_scorer_image(wheels: dict[str, Path], tmp_path: Path) -> None:
    """The scorer image also runs the sinks and the analysts' CLI; training is not there."""
    bin_dir = install(tmp_path, f"{wheels['product']}[scorer,sinks]")
    for script in ("fraud-scorer", "fraud-sink", "fraud-cases"):
        result = run(bin_dir, script, "--help")
        assert result.returncode == 0, (script, result.stderr)
    result = run(bin_dir, "fraud-train", "--help")
    assert result.returncode == 2
    assert "needs the 'training' extra" in result.stderr
    assert not (bin_dir / "fraud-demo").exists() and not (bin_dir / "fraud-produce").exists()
    assert not imports(bin_dir, "fraud_devtools")


def test_operator_image(wheels: dict[str, Path], tmp_path: Path) -> None:
    """The operator image: the operator imports, nothing heavy is installed, and each product
    script says which extra it would need."""
    bin_dir = install(tmp_path, f"{wheels['product']}[operator]")
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


def test_console_installs_without_the_scorer(wheels: dict[str, Path], tmp_path: Path) -> None:
    """The console: its web stack and the case store's driver, no numpy or onnxruntime; the
    built-in login's password hash made from stdin."""
    bin_dir = install(tmp_path, f"{wheels['product']}[console]")
    assert run(bin_dir, "fraud-console", "--help").returncode == 0
    hashed = subprocess.run(
        [str(bin_dir / "fraud-console"), "hash-password"],
        input="s3cret\n", capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert hashed.stdout.startswith("scrypt$") and "s3cret" not in hashed.stdout
    for heavy in ("numpy", "onnxruntime", "fraud_devtools"):
        assert not imports(bin_dir, heavy), heavy


def test_tools_image(wheels: dict[str, Path], tmp_path: Path) -> None:
    """The kind tools image: training and the development kit's producer."""
    bin_dir = install(tmp_path, f"{wheels['product']}[training]", str(wheels["devtools"]))
    for script in ("fraud-train", "fraud-produce", "fraud-demo", "fraud-scorer"):
        result = run(bin_dir, script, "--help")
        assert result.returncode == 0, (script, result.stderr)


def test_rules_check_installs_light(wheels: dict[str, Path], tmp_path: Path) -> None:
    """``fraud-rules check`` in a CI or GitOps job: the base and the 'rules' extra only (no
    numpy, onnxruntime or Kafka client), and it checks a FraudDetector manifest."""
    bin_dir = install(tmp_path, f"{wheels['product']}[rules]")
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


def test_fraudctl_installs_light(wheels: dict[str, Path], tmp_path: Path) -> None:
    """``pip install 'fraud-detector[ctl]'`` on a laptop: fraudctl and its kubectl plugin name,
    without the operator's kopf or anything of the scorer's."""
    bin_dir = install(tmp_path, f"{wheels['product']}[ctl]")
    for script in ("fraudctl", "kubectl-fraud"):
        result = run(bin_dir, script, "--help")
        assert result.returncode == 0 and "promote" in result.stdout, (script, result.stderr)
    for heavy in ("numpy", "onnxruntime", "kopf", "confluent_kafka", "fraud_devtools"):
        assert not imports(bin_dir, heavy), heavy
