"""The drop-in example runs as the README says, and refuses to pick random VGG weights on its own."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "drop_in_loop.py"


def _run(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, str(EXAMPLE), *args], capture_output=True, text=True, env=env, timeout=300)


def test_drop_in_example_trains_with_explicit_random_vgg(tmp_path):
    done = _run(tmp_path, "--seconds", "2", "--vgg-weights", "random")
    assert done.returncode == 0, done.stderr
    assert "SPN feature space: vgg16 with seeded random weights" in done.stdout
    assert "done:" in done.stdout and "PSNR on 16 patches" in done.stdout


def test_drop_in_example_without_imagenet_weights_stops_with_the_way_out(tmp_path):
    refused = _run(tmp_path, "--seconds", "2")
    assert refused.returncode != 0
    assert "spnir weights vgg16 --from FILE" in refused.stderr and "--vgg-weights random" in refused.stderr


def test_drop_in_example_continues_with_its_negatives_from_its_checkpoint(tmp_path):
    args = ("--seconds", "1", "--vgg-weights", "random", "--checkpoint", str(tmp_path / "run.pt"))
    first, second = _run(tmp_path, *args), _run(tmp_path, *args)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    (before,) = re.findall(r"have taken (\d+) steps", first.stdout)
    assert f"continuing from {tmp_path / 'run.pt'}: the negatives have taken {before} steps" in second.stdout
    ran, taken = re.search(r"done: (\d+) steps.*have taken (\d+) steps", second.stdout).groups()
    assert int(taken) == int(before) + int(ran)
