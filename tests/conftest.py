"""Shared fixtures: seeded torch, one thread per test worker, the optional ../shared benchmark images."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture
def shared_data() -> Path:
    """``../shared/data`` beside the repo (Set5, Set14, CBSD68), or skip: a user's clone has none."""
    if not (SHARED_DATA / "Set5").is_dir():
        pytest.skip(f"benchmark images not present at {SHARED_DATA} (only the project's machines have them)")
    return SHARED_DATA


@pytest.fixture
def data(tmp_path, monkeypatch) -> Path:
    """Tiny training and validation images (``train_support.make_data``), reachable as ``${SPNIR_TEST_DATA}``."""
    from train_support import make_data

    root = make_data(tmp_path / "data")
    monkeypatch.setenv("SPNIR_TEST_DATA", str(root))
    return root
