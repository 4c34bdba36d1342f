"""The package as others install it: ``python -m build`` makes an sdist and a wheel that pass ``twine check``;
the wheel, installed with ``--no-deps`` into a fresh virtual environment that holds only the core dependencies,
runs SPN in a training loop and ``spnir --help``, and a toolkit command names the extra it needs in one line.

The fresh environment does not install torch again (a minute of unpacking on 2 cores): a ``.pth`` file points it
at a folder of links to the core distributions of the running interpreter, torch with its own requirements,
numpy and safetensors, and nothing else (pillow, pyyaml, matplotlib, ... stay invisible).
"""
from __future__ import annotations

import importlib.metadata as metadata
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(any(importlib.util.find_spec(m) is None for m in ("build", "twine", "packaging")),
                       reason="needs build, twine and packaging (pip install 'spnir[test]')"),
]

REPO = Path(__file__).resolve().parents[1]
CORE = {"torch", "numpy", "safetensors"}
TOOLKIT_MODULES = ("PIL", "yaml", "tqdm", "matplotlib", "skimage", "tensorboard", "wandb", "lightning")

LOOP = """
import importlib.util, sys
import torch, torch.nn.functional as F
from torch import nn
from spnir import SPN

hidden = [m for m in {toolkit!r} if importlib.util.find_spec(m) is not None]
assert not hidden, f"the core environment sees {{hidden}}"
torch.manual_seed(0)
model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
opt = torch.optim.Adam(model.parameters(), 1e-3)
spn = SPN(model, weight=0.001, vgg_weights="random", periods=(2,), decays=(0.1,)).attach(opt)
for _ in range(4):
    lq, gt = torch.rand(2, 3, 16, 16), torch.rand(2, 3, 16, 16)
    out = model(lq)
    loss = F.l1_loss(out, gt) + spn(lq, out)
    opt.zero_grad(); loss.backward(); opt.step()
assert torch.isfinite(loss) and spn.stats()["neg_term"] < 0 and spn.negatives.steps == 4, spn.stats()
print("loop ok", float(loss))
"""


def _run(*command: str | Path, **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=300, **kwargs)
    assert result.returncode == 0, f"{command} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An sdist and a wheel built from the sdist, as ``python -m build`` makes them, from a copy of the
    sources (the build writes nothing into the checkout)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(REPO / "spnir", source / "spnir", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    out = tmp_path_factory.mktemp("dist")
    _run(sys.executable, "-m", "build", "--no-isolation", "--outdir", out, source)
    return out


def _link_distribution(name: str, folder: Path, done: set[str]) -> None:
    """Link the top-level files of distribution ``name`` (and of what it requires) into ``folder``."""
    from packaging.requirements import Requirement

    dist = metadata.distribution(name)
    key = dist.metadata["Name"].lower().replace("_", "-")
    if key in done:
        return
    done.add(key)
    site = Path(dist.locate_file(""))
    for top in {f.parts[0] for f in dist.files or ()}:
        if top not in ("..", "__pycache__") and not top.endswith(".pth") and not (folder / top).exists():
            (folder / top).symlink_to(site / top)
    for line in dist.requires or ():
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
            _link_distribution(requirement.name, folder, done)


@pytest.fixture(scope="module")
def core_venv(dist: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel (``--no-deps``) and only the core dependencies."""
    venv = tmp_path_factory.mktemp("venv")
    _run(sys.executable, "-m", "venv", "--without-pip", venv)
    python = venv / "bin" / "python"
    (wheel,) = dist.glob("spnir-*.whl")
    _run(sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "--no-index", "-q", wheel)
    deps = tmp_path_factory.mktemp("core-deps")
    done: set[str] = set()
    for name in CORE:
        _link_distribution(name, deps, done)
    site = _run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
    (Path(site) / "spnir_core_deps.pth").write_text(f"{deps}\n")
    return venv


def test_sdist_and_wheel_pass_twine_check_and_the_core_is_torch_numpy_safetensors(dist: Path) -> None:
    files = sorted(dist.iterdir())
    assert sorted(f.suffix for f in files) == [".gz", ".whl"], files
    _run(sys.executable, "-m", "twine", "check", "--strict", *files)
    with zipfile.ZipFile(next(f for f in files if f.suffix == ".whl")) as wheel:
        meta = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
        lines = wheel.read(meta).decode().splitlines()
        names = wheel.namelist()
    requires = [line.split(":", 1)[1].strip() for line in lines if line.startswith("Requires-Dist:")]
    core = {r.split(">")[0].split("=")[0].split(";")[0].strip() for r in requires if "extra ==" not in r}
    assert core == CORE
    extras = {line.split(":", 1)[1].strip() for line in lines if line.startswith("Provides-Extra:")}
    assert {"toolkit", "export", "wandb", "lightning", "all", "test"} <= extras
    assert "spnir/optional.py" in names and "spnir/integrations/lightning.py" in names
    assert not any(n.startswith("tests/") for n in names)


def test_wheel_in_a_core_only_venv_runs_the_loop_and_the_cli(core_venv: Path, tmp_path: Path) -> None:
    python, spnir = core_venv / "bin" / "python", core_venv / "bin" / "spnir"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONNOUSERSITE": "1"}
    env.pop("PYTHONPATH", None)
    where = _run(python, "-c", "import spnir; print(spnir.__file__)", env=env, cwd=tmp_path).stdout
    assert str(core_venv) in where, where  # the installed wheel, not the checkout
    assert "loop ok" in _run(python, "-c", LOOP.format(toolkit=TOOLKIT_MODULES), env=env, cwd=tmp_path).stdout
    assert "train" in _run(spnir, "--help", env=env, cwd=tmp_path).stdout
    demo = subprocess.run([str(spnir), "demo", "--out", str(tmp_path / "demo")], capture_output=True, text=True,
                          env=env, cwd=tmp_path, timeout=300)
    assert demo.returncode == 2
    (line,) = demo.stderr.strip().splitlines()  # the first toolkit package the command imports, named
    assert re.fullmatch(r"spnir demo: error: (this command|the demo) needs (pillow|pyyaml|tqdm|matplotlib|"
                        r"scikit-image|scipy), which is not installed: pip install 'spnir\[toolkit\]'", line), line
    assert not (tmp_path / "demo").exists()
    lightning = subprocess.run([str(python), "-c", "import spnir.integrations.lightning"], capture_output=True,
                               text=True, env=env, cwd=tmp_path, timeout=300)
    assert lightning.returncode == 1 and lightning.stderr.strip().splitlines()[-1] == (
        "spnir.errors.SpnirError: spnir.integrations.lightning needs lightning, which is not installed: "
        "pip install 'spnir[lightning]'")
