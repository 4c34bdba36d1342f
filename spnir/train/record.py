"""What a run folder records about how it was started, and the checks that keep one folder one run.

A run folder holds one run. ``history.yml`` in it lists every start and resume: when, the config file, every
``--set``, the iteration it started from and the settings that changed. Starting a run into a folder that
already holds one is refused unless told (``--overwrite``); resuming with settings that change training is
refused, naming the keys. What may change on a resume: :data:`MAY_CHANGE`.
"""
from __future__ import annotations

import datetime
import os
import shutil
from pathlib import Path
from typing import Any, Iterable, Sequence

import yaml

from spnir.atomic import atomic_path
from spnir.errors import SpnirError
from spnir.train.config import Config

HISTORY = "history.yml"
# Settings that do not change what is trained: the length of the run, logging, validation and checkpoints.
MAY_CHANGE = ("name", "train.total_iter", "train.epochs", "log", "val", "data.val", "checkpoint",
              "train.device", "train.cpu_allocator", "data.train.workers", "data.verify")
# What spnir writes into a run folder (and ``--overwrite`` removes); anything else there is left alone.
RUN_FILES = ("config.yml", HISTORY, "train.log", "scalars.csv", "model_final.pt", "model_final_ema.pt")
RUN_FOLDERS = ("checkpoints", "tb", "images")


def existing_run(out_dir: Path) -> list[str]:
    """The names of a previous run's files in ``out_dir`` (empty: the folder holds no run)."""
    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    checkpoints = out_dir / "checkpoints"
    if checkpoints.is_dir() and any(p.suffix == ".pt" for p in checkpoints.iterdir()):
        found.append("checkpoints/")
    return found


def refuse_existing_run(out_dir: Path, found: list[str]) -> None:
    """Raise the error for a fresh start into a folder that holds a run."""
    raise SpnirError(
        f"{out_dir} already holds a run ({', '.join(found[:4])}); continue it with --resume auto, "
        f"or give a fresh --out folder (--overwrite replaces that run)"
    )


def clear_run(out_dir: Path) -> None:
    """Remove what spnir wrote for a previous run in ``out_dir`` (``--overwrite``); nothing else."""
    for name in RUN_FILES:
        (out_dir / name).unlink(missing_ok=True)
    for name in RUN_FOLDERS:
        if (out_dir / name).is_dir():
            shutil.rmtree(out_dir / name)


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict) and value:
        flat: dict[str, Any] = {}
        for key, item in value.items():
            flat.update(_flatten(item, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    return {prefix: value}


def _may_change(key: str) -> bool:
    return any(key == allowed or key.startswith(allowed + ".") for allowed in MAY_CHANGE)


def changed_settings(recorded: Config, config: Config) -> tuple[list[str], list[str]]:
    """``(refused, allowed)``: dotted keys whose values differ, split by whether a resume may change them."""
    before, after = _flatten(recorded), _flatten(config)
    differing = sorted(k for k in before.keys() | after.keys() if before.get(k, "<absent>") != after.get(k, "<absent>"))
    return [k for k in differing if not _may_change(k)], [k for k in differing if _may_change(k)]


def check_resume_settings(recorded: Config, config: Config, source: str) -> list[str]:
    """Refuse a resume that changes training; return the allowed keys that changed (for the record)."""
    refused, allowed = changed_settings(recorded, config)
    if refused:
        before, after = _flatten(recorded), _flatten(config)
        shown = "; ".join(f"{k}: {before.get(k, '<absent>')!r} -> {after.get(k, '<absent>')!r}" for k in refused[:6])
        more = f" (and {len(refused) - 6} more)" if len(refused) > 6 else ""
        raise SpnirError(
            f"cannot resume {source}: these settings differ from the run's own and change training: {shown}{more}. "
            f"Resume with the command the run was started with (see history.yml in the run folder), or start a "
            f"new run in a fresh --out folder"
        )
    return allowed


def read_history(out_dir: Path) -> list[dict[str, Any]]:
    """The recorded starts and resumes of the run in ``out_dir`` (oldest first)."""
    path = out_dir / HISTORY
    if not path.is_file():
        return []
    entries = yaml.safe_load(path.read_text()) or []
    return entries if isinstance(entries, list) else []


def record_start(out_dir: Path, config_file: str | None, overrides: Sequence[str], iteration: int,
                 resumed_from: Path | None, changed: Iterable[str] = ()) -> None:
    """Append this start (or resume) to ``history.yml``, atomically."""
    entry: dict[str, Any] = {
        "when": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "config": config_file, "set": list(overrides), "iteration": iteration,
        "resumed_from": str(resumed_from) if resumed_from is not None else None,
        "changed": list(changed), "restart": int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")),
    }
    entries = [*read_history(out_dir), entry]
    with atomic_path(out_dir / HISTORY) as tmp:
        tmp.write_text(yaml.safe_dump(entries, sort_keys=False))


def resume_command(config_file: str, overrides: Sequence[str], out_dir: Path) -> str:
    """The ``spnir train`` command that continues this run, to paste verbatim."""
    import shlex

    words = ["spnir", "train", "-c", config_file]
    for item in overrides:
        words += ["--set", item]
    words += ["--out", str(out_dir), "--resume", "auto"]
    return shlex.join(words)
