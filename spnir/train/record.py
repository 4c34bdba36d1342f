"""What makes a folder a run folder: the files a run writes, found before a new run would write over them."""
from __future__ import annotations

import shutil
from pathlib import Path

from spnir.errors import SpnirError

RUN_FILES = ("config.yml", "scalars.csv", "train.log", "model_final.pt", "model_final_ema.pt")
RUN_FOLDERS = ("checkpoints", "tb")


def run_contents(out_dir: Path) -> list[str]:
    """The names of the run files and folders ``out_dir`` holds (empty when it holds no run)."""
    if not out_dir.exists():
        return []
    if not out_dir.is_dir():
        raise SpnirError(f"run folder {out_dir} is a file, expected a folder (choose another --out)")
    found = [name for name in RUN_FILES if (out_dir / name).exists()]
    return found + [f"{name}/" for name in RUN_FOLDERS if (out_dir / name).is_dir() and any((out_dir / name).iterdir())]


def check_fresh(out_dir: Path, overwrite: bool) -> None:
    """Refuse to start a new run in a folder that holds one, unless ``overwrite``."""
    found = run_contents(out_dir)
    if found and not overwrite:
        raise SpnirError(
            f"run folder {out_dir} already holds a run ({', '.join(found)}); continue it with --resume auto, "
            f"start a new run in a fresh folder (--out NEW_FOLDER), or replace it with --overwrite"
        )


def clear_run(out_dir: Path) -> None:
    """Remove a previous run's files (``--overwrite``), so none of its checkpoints passes for the new run's."""
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)

