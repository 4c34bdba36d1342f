"""``run_training(config, out_dir, resume=None)``: one training run from a config, the Python face of
``spnir train``. Works alike in one process and under torchrun (each rank calls it)."""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from torch import nn

from spnir.allocator import use_cpu_allocator
from spnir.archs.model_files import save_model_checkpoint
from spnir.atomic import atomic_path, remove_stale_temporaries
from spnir.errors import Param, ParameterError, SpnirError
from spnir.spn import NegativeLoss
from spnir.train.build import build_parts, describe
from spnir.train.config import Config, dump_config, load_config
from spnir.train.distributed import DistContext, barrier, init_distributed, shutdown_distributed
from spnir.train.lock import hold_run_folder
from spnir.train.record import (
    LENGTH,
    changed_settings,
    check_resume_settings,
    clear_run,
    existing_run,
    final_weights,
    read_history,
    record_start,
    refuse_continuing_finished,
    refuse_existing_run,
)
from spnir.train.run_log import RunLogger
from spnir.train.trainer import Schedule, Trainer
from spnir.train.training_state import CheckpointDir, load_resume


@dataclass
class TrainResult:
    """What a run did. ``model``/``ema_model`` are the trained networks (on the training device)."""

    out_dir: Path
    status: str                      # "completed" or "interrupted (SIGTERM)" ...
    iteration: int
    total_iter: int
    last_checkpoint: Path | None     # resumable training state
    final_weights: dict[str, Path] = field(default_factory=dict)  # "model"/"ema" -> spnir model checkpoint
    validation: dict[str, dict[str, float]] = field(default_factory=dict)   # last validation
    best: dict[str, dict[str, tuple[float, int]]] = field(default_factory=dict)
    feature_space: str | None = None  # SPN's feature space, None without SPN
    model: nn.Module | None = None
    ema_model: nn.Module | None = None
    spn: NegativeLoss | None = None  # the negative term (SPN or another source's), None without one
    signal: int | None = None

    @property
    def completed(self) -> bool:
        return self.status == "completed"


def run_training(
    config: str | os.PathLike | Config,
    out_dir: str | os.PathLike,
    resume: str | None = None,
    overrides: Sequence[str] = (),
    on_iteration: Callable[[int], None] | None = None,
    overwrite: bool = False,
    config_file: str | None = None,
) -> TrainResult:
    """Train as ``config`` says, writing into ``out_dir``.

    ``config``: a YAML path (spnir or BasicSR style) or a dict; ``overrides``: ``"key=value"`` strings;
    ``resume``: ``None`` (fresh), ``"auto"`` (newest checkpoint in ``out_dir``, fresh if none) or a path.
    ``on_iteration(it)`` is called after every iteration (progress hooks, tests). A write that fails (disk
    full, a path under a file) raises :class:`SpnirError` naming the file, also written to ``train.log``.

    A folder that already holds a run is refused for a fresh start unless ``overwrite`` (which replaces that
    run's files); a resume whose settings change the result is refused, naming the keys, except a new length
    given by ``overrides``; a finished run is not continued in its folder (``spnir.train.record``). One
    process trains into a folder at a time (``spnir.train.lock``). Under torchrun, a restarted worker group
    (``TORCHELASTIC_RESTART_COUNT > 0``) resumes by itself.
    ``config_file`` names the YAML the config came from, for ``history.yml`` (a path ``config`` is used as is).
    """
    if resume is None and int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0:
        resume = "auto"  # torchrun restarted the workers: continue this run from its newest checkpoint
    notes: list[str] = []
    if config_file is None and not isinstance(config, dict):
        config_file = str(config)
    if resume is not None and overwrite:
        raise ParameterError(Param("overwrite", True), " replaces a run and ", Param("resume"),
                             " continues one: give one of them")
    config = load_config(config, overrides, notes)
    notes.append(f"{use_cpu_allocator(config['train']['cpu_allocator'])} (train.cpu_allocator)")
    out_dir = Path(out_dir)
    ctx = init_distributed(config["train"]["device"])
    try:
        with hold_run_folder(out_dir) if ctx.is_main else contextlib.nullcontext():
            return _train(config, out_dir, ctx, resume, overrides, notes, on_iteration, overwrite, config_file)
    finally:
        shutdown_distributed(ctx)


def _train(config: Config, out_dir: Path, ctx: DistContext, resume: str | None, overrides: Sequence[str],
           notes: list[str], on_iteration: Callable[[int], None] | None, overwrite: bool,
           config_file: str | None) -> TrainResult:
    """:func:`run_training` once the run folder is held."""
    checkpoints = CheckpointDir(out_dir / "checkpoints", keep=config["checkpoint"]["keep"])
    if ctx.is_main:
        remove_stale_temporaries(out_dir, any_host=True)
        remove_stale_temporaries(checkpoints.folder, any_host=True)
    resume_path, state = load_resume(resume, checkpoints, notes)
    finals = final_weights(out_dir)
    changed: list[str] = []
    if state is not None:
        if finals:  # a finished run is only resumed as it is, from its end: nothing to train
            newest = checkpoints.newest_valid()
            longer = set(changed_settings(state["config"], config)) & set(LENGTH)
            if longer or newest is None or newest[0] != int(state["iteration"]):
                refuse_continuing_finished(out_dir, finals, newest[1] if newest is not None else None)
        history = read_history(out_dir)
        given = [item.split("=", 1)[0].strip() for item in overrides]  # the user's word for a new length
        changed = check_resume_settings(state["config"], config, str(resume_path), given,
                                        history[-1].get("set") if history else None)
    elif resume == "auto" and finals:
        refuse_continuing_finished(out_dir, finals, None)
    elif resume is None and not overwrite and (found := existing_run(out_dir)):
        refuse_existing_run(out_dir, found)  # "auto" with no checkpoint yet starts the run, as documented
    parts = build_parts(config, ctx)
    start = int(state["iteration"]) if state is not None else 0
    if start > parts.total_iter:
        raise SpnirError(f"cannot resume {resume_path}: the run is at iteration {start}, past the "
                         f"{parts.total_iter} iterations this config trains")
    if overwrite and ctx.is_main:
        clear_run(out_dir)
    logger = RunLogger(out_dir if ctx.is_main else None, parts.total_iter, start,
                       tensorboard=config["log"]["tensorboard"], progress=config["log"]["progress"],
                       wandb=config["log"]["wandb"], config=config)
    try:
        if ctx.is_main:
            with atomic_path(out_dir / "config.yml") as tmp:
                space = f"# SPN feature space: {parts.spn.feature_space}\n" if parts.spn is not None else ""
                tmp.write_text(space + dump_config(config))
            record_start(out_dir, config_file, overrides, start, resume_path, changed)
            processes = [f"DDP over {ctx.world_size} processes on {ctx.device.type}"] if ctx.distributed else []
            for line in [*notes, *processes, *describe(parts, config)]:
                logger.message(line)
        schedule = Schedule(log_every=config["log"]["every"], val_every=config["val"]["every"],
                            ckpt_every=config["checkpoint"]["every"], val_use_ema=config["val"]["use_ema"])
        trainer = Trainer(parts, ctx, checkpoints, logger, schedule, on_iteration)
        if state is not None:
            trainer.load_state_dict(state, str(resume_path))
            logger.message(f"resumed from {resume_path} at iteration {trainer.iteration}")
        fit = trainer.fit()
        final: dict[str, Path] = {}
        if fit.status == "completed" and ctx.is_main:  # a finished run resumed as it is keeps its files
            final = _save_final(parts, out_dir, fit.iteration, replace=fit.iteration > start or not finals)
    except SpnirError as exc:
        logger.error(f"error: {exc}")
        raise
    finally:
        logger.close()
    barrier(ctx)
    return TrainResult(
        out_dir=out_dir, status=fit.status, iteration=fit.iteration, total_iter=parts.total_iter,
        last_checkpoint=fit.last_checkpoint, final_weights=final, validation=fit.validation, best=fit.best,
        feature_space=parts.spn.feature_space if parts.spn is not None else None, model=parts.model,
        ema_model=parts.ema.module if parts.ema is not None else None, spn=parts.spn, signal=fit.signal,
    )


def _save_final(parts, out_dir: Path, iteration: int, replace: bool = True) -> dict[str, Path]:
    """The trained weights as spnir model checkpoints (loadable by ``spnir restore/eval --checkpoint``);
    ``replace=False`` writes only the missing ones (a finished run resumed as it is)."""
    if not getattr(parts.model, "spnir_preset", None):
        return {}  # a custom module:callable model: its weights are in the training checkpoint
    trained = {"iteration": iteration, "spn_feature_space": parts.spn.feature_space if parts.spn is not None else None}
    models = {"model": (parts.model, out_dir / "model_final.pt", trained)}
    if parts.ema is not None:
        parts.ema.module.spnir_preset = parts.model.spnir_preset
        models["ema"] = (parts.ema.module, out_dir / "model_final_ema.pt", {**trained, "ema": True})
    return {kind: path if path.is_file() and not replace else save_model_checkpoint(model, path, extra)
            for kind, (model, path, extra) in models.items()}
