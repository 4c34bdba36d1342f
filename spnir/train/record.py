"""What a run folder records about how it was started, and the checks that keep one folder one run.

A run folder holds one run. ``history.yml`` in it lists every start and resume: when, the config file, every
``--set``, the iteration it started from and the settings that changed. Starting a run into a folder that
already holds one is refused unless told (``--overwrite``). On a resume, settings that do not change the
trained weights (:data:`NEUTRAL`) may change and are recorded; the run's length (:data:`LENGTH`) changes
the result, so it changes only when this command's own ``--set`` gives it; any other change is refused,
naming the keys. A finished run (its ``model_final*.pt`` written) is never continued in its folder.
"""
from __future__ import annotations

import datetime
import os
import shlex
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from spnir.atomic import atomic_path
from spnir.errors import Param, ParameterError, shown
from spnir.train.config import Config
from spnir.yamlfile import read_yaml

HISTORY = "history.yml"
# Settings that do not change what is trained: logging, validation, checkpoints, and how the same computation
# runs (device, kernels, memory format, compilation, loader processes, the CPU allocator).
NEUTRAL = ("name", "log", "val", "data.val", "checkpoint", "train.device", "train.cpu_allocator",
           "data.train.workers", "data.verify", "train.compile", "train.channels_last", "train.cudnn_benchmark",
           "optim.fused", "optim.foreach")
# The run's length: a resume changes it only when told (schedules over the run are computed from it).
LENGTH = ("train.total_iter", "train.epochs")
FINAL_FILES = ("model_final.pt", "model_final_ema.pt")
# What spnir writes into a run folder (and ``--overwrite`` removes); anything else there is left alone.
RUN_FILES = ("config.yml", HISTORY, "train.log", "scalars.csv", *FINAL_FILES)
RUN_FOLDERS = ("checkpoints", "tb", "images", "wandb")


def existing_run(out_dir: Path) -> list[str]:
    """The names of a previous run's files in ``out_dir`` (empty: the folder holds no run)."""
    found = [name for name in RUN_FILES if (out_dir / name).is_file()]
    checkpoints = out_dir / "checkpoints"
    if checkpoints.is_dir() and any(p.suffix == ".pt" for p in checkpoints.iterdir()):
        found.append("checkpoints/")
    return found


def refuse_existing_run(out_dir: Path, found: list[str]) -> None:
    """Raise the error for a fresh start into a folder that holds a run."""
    raise ParameterError(f"{out_dir} already holds a run ({', '.join(found[:4])}); continue it with ",
                         Param("resume", "auto"), ", or give a fresh ", Param("out_dir"), " folder (",
                         Param("overwrite", True), " replaces that run)")


def clear_run(out_dir: Path) -> None:
    """Remove what spnir wrote for a previous run in ``out_dir`` (on ``overwrite``); nothing else."""
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


def _within(key: str, names: Iterable[str]) -> bool:
    return any(key == name or key.startswith(name + ".") for name in names)


def changed_settings(recorded: Config, config: Config) -> list[str]:
    """The dotted keys whose values differ between the run's recorded config and ``config``."""
    before, after = _flatten(recorded), _flatten(config)
    return sorted(k for k in before.keys() | after.keys() if before.get(k, "<absent>") != after.get(k, "<absent>"))


def check_resume_settings(recorded: Config, config: Config, source: str, given: Sequence[str] = (),
                          started_with: Sequence[str] | None = None) -> list[str]:
    """Refuse a resume that changes the result; return the keys that changed (for the record).

    ``given``: the keys this start's overrides gave (the user's word for a new length); ``started_with``:
    the overrides of the run's last start, quoted in the refusal so they can be given again."""
    differing = changed_settings(recorded, config)
    refused = [k for k in differing if not _within(k, NEUTRAL) and not _within(k, LENGTH)]
    unconfirmed = [k for k in differing if _within(k, LENGTH) and not _within(k, given)]
    if not refused and not unconfirmed:
        return differing
    before, after = _flatten(recorded), _flatten(config)
    listed = refused or unconfirmed
    values = "; ".join(f"{k}: {shown(before.get(k, '<absent>'))} -> {shown(after.get(k, '<absent>'))}"
                       for k in listed[:6])
    more = f" (and {len(listed) - 6} more)" if len(listed) > 6 else ""
    again: tuple[str | Param, ...] = (("; the run was last started with ", Param("overrides", list(started_with)))
                                      if started_with else ())
    if refused:
        raise ParameterError(
            f"cannot resume {source}: these settings differ from the run's own and change what is trained: "
            f"{values}{more}. Resume with the settings the run was started with (history.yml in the run folder "
            "lists them", *again, "), or start a new run in a fresh ", Param("out_dir"), " folder")
    wanted = [f"{k}={after[k]}" for k in unconfirmed if after.get(k) is not None]
    raise ParameterError(
        f"cannot resume {source}: the run's length differs from its own: {values}. The length changes the result "
        "(the learning-rate schedule is computed from it), so it changes only when this start says so: to "
        "continue the run as it was started, give its own value again", *(again or (" (history.yml lists it)",)),
        "; to change the length, add ", Param("overrides", wanted) if wanted else "the new length",
        " to this start")


def final_weights(out_dir: Path) -> list[str]:
    """The final weights files in ``out_dir`` (a finished run's)."""
    return [name for name in FINAL_FILES if (out_dir / name).is_file()]


def refuse_continuing_finished(out_dir: Path, finals: list[str], newest: Path | None) -> None:
    """Raise the error for a resume that would train on in a finished run's folder."""
    raise ParameterError(
        f"{out_dir} holds a finished run ({', '.join(finals)}); continuing it there would replace its result. "
        "To train on from its end, start a new run from its last checkpoint: ",
        Param("resume", str(newest) if newest is not None else "CHECKPOINT"), " ", Param("out_dir", "NEW_FOLDER"),
        ", with the new length in ", Param("overrides"))


def read_history(out_dir: Path) -> list[dict[str, Any]]:
    """The recorded starts and resumes of the run in ``out_dir`` (oldest first)."""
    path = out_dir / HISTORY
    if not path.is_file():
        return []
    entries = read_yaml(path) or []
    return [e for e in entries if isinstance(e, dict)] if isinstance(entries, list) else []


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
    words = ["spnir", "train", "-c", config_file]
    for item in overrides:
        words += ["--set", item]
    words += ["--out", str(out_dir), "--resume", "auto"]
    return shlex.join(words)
