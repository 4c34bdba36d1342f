"""Running a study: each setting x seed trained in its folder (resuming), evaluated once into ``metrics.json``."""
from __future__ import annotations

import copy
import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from spnir.atomic import atomic_path, writing
from spnir.errors import Param, ParameterError, SpnirError
from spnir.evaluation import Inference, dataset_samples, evaluate_images, model_restore
from spnir.metrics import MetricSettings
from spnir.metrics.suite import MetricSuite
from spnir.study.schema import Setting, Study

EVAL_SEED = 0  # synthetic evaluation inputs (noise, ...) are drawn with this seed in every run


def eval_datasets(study: Study, config: dict[str, Any]) -> list[tuple[str, Any]]:
    """``[(name, dataset)]`` of the evaluation sets (the study's ``eval``, else the config's ``data.val``).

    Random degradations of the evaluation inputs use :data:`EVAL_SEED`, not the run's seed: every setting
    and seed is measured on the same inputs, so the spread over seeds is the training's alone."""
    from spnir.train.build import build_val_sets
    from spnir.train.config import validate

    cfg = copy.deepcopy(config)
    cfg["seed"] = EVAL_SEED
    if study.eval_sets is not None:
        raw = copy.deepcopy(cfg)
        raw["data"]["val"] = study.eval_sets
        cfg = validate(raw, f"{study.source}: eval")
    return [(v.name, v.dataset) for v in build_val_sets(cfg)]


def median_step_seconds(folder: Path) -> float:
    """Median train-step wall time (``step_s``) of a run, without its first logged interval (warm-up)."""
    from spnir.train.run_log import read_scalars

    path = folder / "scalars.csv"
    values = [v for _, v in read_scalars(path).get("step_s", [])] if path.is_file() else []
    values = sorted(values[1:] if len(values) > 2 else values)
    if not values:
        raise SpnirError(f"{path}: no step_s values logged; equal_compute needs that run's step times")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def equal_compute_iterations(study: Study, setting: Setting, seed: int, out: Path) -> dict[str, Any]:
    """Iterations giving ``setting`` the compute of its ``of`` run, from that seed's measured step times."""
    if setting.equal_compute is None:
        raise SpnirError(f"{study.source}: setting {setting.name!r} has no equal_compute")
    of, base = setting.equal_compute
    of_iters = study.run_config(next(s for s in study.settings if s.name == of), seed)["train"]["total_iter"]
    of_step = median_step_seconds(study.run_dir(out, of, seed))
    base_step = median_step_seconds(study.run_dir(out, base, seed))
    return {"of": of, "base": base, "of_iterations": of_iters, "of_step_s": of_step, "base_step_s": base_step,
            "ratio": of_step / base_step, "iterations": max(1, round(of_iters * of_step / base_step))}


def setting_config(study: Study, setting: Setting, seed: int, out: Path) -> dict[str, Any]:
    """The run's config; an ``equal_compute`` setting gets its iterations from ``compute.json`` (written once,
    from the measured step times, so a resumed run keeps its length)."""
    if setting.equal_compute is None:
        return study.run_config(setting, seed)
    folder = study.run_dir(out, setting.name, seed)
    path = folder / "compute.json"
    if path.is_file():
        compute = json.loads(path.read_text())
    else:
        compute = equal_compute_iterations(study, setting, seed, out)
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(compute, indent=1))
    return study.run_config(Setting(setting.name, [*setting.overrides, f"train.total_iter={compute['iterations']}"]),
                            seed)


def evaluated_model(study: Study, setting: Setting, seed: int, out: Path) -> torch.nn.Module:
    """The model a run is measured with: the config's own (pretrained) model for ``evaluate_only``."""
    if setting.evaluate_only:
        from spnir.train.build import build_model

        return build_model(study.run_config(setting, seed)["model"]).eval()
    return final_model(study.run_dir(out, setting.name, seed), study.run_config(setting, seed)["val"]["use_ema"])


def final_model(folder: Path, use_ema: bool = True) -> torch.nn.Module:
    """The finished run's evaluation model, the one its validation measures: the EMA weights if it has them
    and ``use_ema`` (the config's ``val.use_ema``), else the plain weights."""
    from spnir.archs.model_files import model_from_checkpoint

    names = ("model_final_ema.pt", "model_final.pt") if use_ema else ("model_final.pt",)
    for name in names:
        if (folder / name).is_file():
            return model_from_checkpoint(folder / name).eval()
    raise SpnirError(f"{folder} has no {' / '.join(names)}: the run did not finish")


@torch.no_grad()
def evaluate_run(study: Study, config: dict[str, Any], folder: Path, model: torch.nn.Module | None = None
                 ) -> dict[str, Any]:
    """Per-image values of the study's metrics (PSNR/SSIM unless it names others) of a finished run (or of
    ``model``) on every evaluation set, whole images in float32 (``metrics.json``); a bad image stops it (the
    runs are compared image by image)."""
    model = final_model(folder, config["val"]["use_ema"]) if model is None else model
    folder.mkdir(parents=True, exist_ok=True)
    val = config["val"]
    settings = MetricSettings(crop_border=val["crop_border"], y_channel=val["y_channel"], convention=val["convention"])
    suite = MetricSuite.build(study.metrics, settings, val["vgg_weights"])
    restore = model_restore(model, Inference(scale=config["model"]["scale"] or 1))
    sets = {}
    for name, dataset in eval_datasets(study, config):
        measured = evaluate_images(restore, dataset_samples(dataset), suite, name, on_error="stop")
        sets[name] = {"images": [r.name for r in measured.images],
                      **{m: [r.values[m] for r in measured.images] for m in suite.names}}
    result = {"metrics": suite.describe(), "sets": sets}
    with atomic_path(folder / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def run_study(study: Study, out: str | Path, only: Sequence[str] | None = None,
              log: Callable[[str], None] = print, overwrite: bool = False) -> bool:
    """Train and evaluate every (setting, seed) not finished yet, seed by seed; ``True`` when all are done.

    Returns ``False`` (and stops) when a run was interrupted (SIGINT/SIGTERM): run the study again to resume.
    ``overwrite`` trains every chosen run afresh, replacing what its folder holds, instead of skipping finished
    runs and resuming interrupted ones.
    """
    from spnir.train import run_training

    out = Path(out)
    with writing(out):
        out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(only or ()) - {s.name for s in study.settings})
    if unknown:
        raise ParameterError(f"{study.source}: ", Param("only"), f" names {unknown}, not settings of the study "
                             f"({', '.join(s.name for s in study.settings)})")
    chosen = [s for s in study.settings if only is None or s.name in only]
    if overwrite:  # the measurements of the runs being replaced
        for setting in chosen:
            for seed in study.seeds:
                for name in ("metrics.json", "compute.json"):
                    (study.run_dir(out, setting.name, seed) / name).unlink(missing_ok=True)
    for seed in study.seeds:
        for setting in chosen:
            folder = study.run_dir(out, setting.name, seed)
            if (folder / "metrics.json").is_file():
                continue
            if setting.evaluate_only:
                _evaluate_untrained(study, setting, seed, out, log)
                continue
            config = setting_config(study, setting, seed, out)
            if overwrite or not (folder / "model_final.pt").is_file():
                log(f"study {study.name}: training {setting.name} seed {seed} in {folder}")
                result = run_training(config, folder, resume=None if overwrite else "auto", overwrite=overwrite)
                if not result.completed:
                    log(f"study {study.name}: {setting.name} seed {seed} {result.status}; "
                        "run the study again to resume")
                    return False
            log(f"study {study.name}: evaluating {setting.name} seed {seed}")
            evaluate_run(study, config, folder)
    return True


def _evaluate_untrained(study: Study, setting: Setting, seed: int, out: Path, log: Callable[[str], None]) -> None:
    """An ``evaluate_only`` row: the same model and inputs for every seed, so measured once and copied."""
    folder = study.run_dir(out, setting.name, seed)
    done = [study.run_dir(out, setting.name, k) / "metrics.json" for k in study.seeds]
    done = [p for p in done if p.is_file()]
    if done:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "metrics.json") as tmp:
            tmp.write_text(done[0].read_text())
        return
    log(f"study {study.name}: evaluating {setting.name} (no training)")
    evaluate_run(study, study.run_config(setting, seed), folder, evaluated_model(study, setting, seed, out))


def collect(study: Study, out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``results[setting][seed]`` = the run's ``metrics.json`` content, for the runs that finished."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for setting in study.settings:
        for seed in study.seeds:
            path = study.run_dir(out, setting.name, seed) / "metrics.json"
            if path.is_file():
                results.setdefault(setting.name, {})[seed] = json.loads(path.read_text())
    return results
