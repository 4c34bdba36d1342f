"""``spnir study``: train the same network under several loss settings and seeds, then compare them.

A study file (YAML) names a training config, the settings (each a list of ``--set`` overrides), the seeds
and the evaluation sets::

    name: sr_x4
    config: train.yml                 # relative to the study file
    set: [train.total_iter=400]       # overrides for every run
    seeds: [0, 1, 2]
    settings:
      - {name: baseline, set: []}
      - {name: spn, set: [spn.enabled=true]}
    eval:                             # same entries as data.val; default: the config's data.val
      - {name: Set14, type: clean, gt: ../shared/data/Set14, degradations: [{type: bicubic, scale: 4}]}
    compare: {set: Set14, image: 0, size: 96}   # the crop shown side by side in the report
    baseline: [released, plain]       # the difference tables (default: the first setting)

Two kinds of setting besides plain ``set`` overrides:

- ``{name: released, evaluate_only: true}``: the config's model (its ``model.pretrained`` weights) evaluated
  as it is, no training: the starting row of a fine-tuning study.
- ``{name: plain-equal-compute, set: [...], equal_compute: {of: spn, base: plain}}``: trained for
  ``round(iterations of spn x step time of spn / step time of plain)`` iterations, the step times (median
  train-step wall time, ``step_s`` in ``scalars.csv``) measured in that seed's ``spn`` and ``plain`` runs, so it
  gets the compute of the ``spn`` run. Both must come earlier in ``settings``; the measurement is kept in the
  run's ``compute.json`` and in the report.

Each run trains in ``OUT/runs/<setting>/seed<k>`` with ``--resume auto`` (an interrupted study continues
where it stopped; finished runs are skipped) and keeps its final weights. A finished run is evaluated once
per image and writes ``metrics.json``. :func:`write_report` turns whatever has finished into
``OUT/report.md`` with ``curves.png`` and ``comparison.png``: mean and standard deviation over seeds of
PSNR/SSIM per set, and the difference to the baseline with a paired t-test across images.
"""
from __future__ import annotations

import copy
import json
import math
import os
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import torch

from spnir.atomic import atomic_path
from spnir.errors import SpnirError
from spnir.metrics import MetricSettings
from spnir.yamlfile import read_yaml

STUDY_KEYS = ("name", "config", "set", "seeds", "settings", "eval", "compare", "baseline")


@dataclass
class Setting:
    name: str
    overrides: list[str]
    evaluate_only: bool = False                 # the config's (pretrained) model, evaluated untrained
    equal_compute: tuple[str, str] | None = None  # (of, base): train as long as `of` ran, in `base`'s step time


@dataclass
class Study:
    """A validated study file."""

    name: str
    config: str | dict[str, Any]        # the training config: a file path or a raw mapping
    common: list[str]                   # overrides of every run
    seeds: list[int]
    settings: list[Setting]
    eval_sets: list[dict[str, Any]] | None
    compare: dict[str, Any]
    baselines: list[str]
    source: str = "study"

    @property
    def baseline(self) -> str:
        """The first setting the others are compared with."""
        return self.baselines[0]

    def run_config(self, setting: Setting, seed: int) -> dict[str, Any]:
        """The validated training config of one run."""
        from spnir.train.config import load_config

        source = copy.deepcopy(self.config) if isinstance(self.config, dict) else self.config
        return load_config(source, [*self.common, *setting.overrides, f"seed={seed}"])


def load_study(path: str | Path) -> Study:
    """Read and check a study file; the training config is validated for every setting here."""
    path = Path(path)
    if not path.is_file():
        raise SpnirError(f"study file {path} does not exist")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpnirError(f"{path}: expected a mapping of settings at the top level")
    unknown = [k for k in raw if k not in STUDY_KEYS]
    if unknown:
        raise SpnirError(f"{path}: unknown key(s) {unknown}; known: {', '.join(STUDY_KEYS)}")
    for key in ("config", "settings"):
        if key not in raw:
            raise SpnirError(f"{path}: missing required key {key!r}")
    config = raw["config"]
    if isinstance(config, str):
        config = str(path.parent / config)
    elif not isinstance(config, dict):
        raise SpnirError(f"{path}: config must be a file name or a mapping, got {config!r}")
    settings = [_setting(path, i, entry) for i, entry in enumerate(raw["settings"] or [])]
    names = [s.name for s in settings]
    if not settings or len(set(names)) != len(names):
        raise SpnirError(f"{path}: settings need distinct names, got {names}")
    _check_equal_compute(path, settings)
    seeds = raw.get("seeds", [0])
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise SpnirError(f"{path}: seeds must be a non-empty list of integers >= 0, got {seeds!r}")
    baselines = raw.get("baseline", names[0])
    baselines = [str(b) for b in (baselines if isinstance(baselines, list) else [baselines])]
    for baseline in baselines:
        if baseline not in names:
            raise SpnirError(f"{path}: baseline {baseline!r} is not one of the settings {names}")
    study = Study(name=str(raw.get("name", path.stem)), config=config, common=[str(s) for s in raw.get("set") or []],
                  seeds=seeds, settings=settings, eval_sets=raw.get("eval"), compare=dict(raw.get("compare") or {}),
                  baselines=baselines, source=str(path))
    for setting in settings:  # fail before any training
        try:
            study.run_config(setting, seeds[0])
        except SpnirError as exc:
            raise SpnirError(f"{path}: setting {setting.name!r}: {exc}") from exc
    return study


SETTING_KEYS = ("name", "set", "evaluate_only", "equal_compute")


def _setting(path: Path, i: int, entry: Any) -> Setting:
    if not isinstance(entry, dict) or "name" not in entry or set(entry) - set(SETTING_KEYS):
        raise SpnirError(f"{path}: settings[{i}] must be {{name: ..., set: [key=value, ...]}} (optional keys "
                         f"evaluate_only, equal_compute), got {entry!r}")
    equal = entry.get("equal_compute")
    if equal is not None and (not isinstance(equal, dict) or set(equal) != {"of", "base"}):
        raise SpnirError(f"{path}: settings[{i}].equal_compute must be {{of: SETTING, base: SETTING}}, got {equal!r}")
    only = entry.get("evaluate_only", False)
    if not isinstance(only, bool) or (only and (equal or entry.get("set"))):
        raise SpnirError(f"{path}: settings[{i}].evaluate_only must be true/false, without set or equal_compute")
    return Setting(str(entry["name"]), [str(s) for s in entry.get("set") or []], only,
                   (str(equal["of"]), str(equal["base"])) if equal else None)


def _check_equal_compute(path: Path, settings: list[Setting]) -> None:
    """``equal_compute`` names two trained settings listed before it (they run first, seed by seed)."""
    for index, setting in enumerate(settings):
        if setting.equal_compute is None:
            continue
        earlier = {s.name: s for s in settings[:index]}
        for name in setting.equal_compute:
            if name not in earlier or earlier[name].evaluate_only or earlier[name].equal_compute:
                raise SpnirError(f"{path}: setting {setting.name!r}: equal_compute names {name!r}, which must be "
                                 f"a trained setting listed before it (not evaluate_only, not equal_compute)")


# ----------------------------------------------------------------------------------------------- running


def run_dir(out: Path, setting: str, seed: int) -> Path:
    return out / "runs" / setting / f"seed{seed}"


EVAL_SEED = 0  # synthetic evaluation inputs (noise, ...) are drawn with this seed in every run


def eval_datasets(study: Study, config: dict[str, Any]):
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
    from spnir.train.logging import read_scalars

    path = folder / "scalars.csv"
    values = [v for _, v in read_scalars(path).get("step_s", [])] if path.is_file() else []
    values = sorted(values[1:] if len(values) > 2 else values)
    if not values:
        raise SpnirError(f"{path}: no step_s values logged; equal_compute needs that run's step times")
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


def equal_compute_iterations(study: Study, setting: Setting, seed: int, out: Path) -> dict[str, Any]:
    """Iterations giving ``setting`` the compute of its ``of`` run, from that seed's measured step times."""
    of, base = setting.equal_compute
    of_iters = study.run_config(next(s for s in study.settings if s.name == of), seed)["train"]["total_iter"]
    of_step, base_step = median_step_seconds(run_dir(out, of, seed)), median_step_seconds(run_dir(out, base, seed))
    return {"of": of, "base": base, "of_iterations": of_iters, "of_step_s": of_step, "base_step_s": base_step,
            "ratio": of_step / base_step, "iterations": max(1, round(of_iters * of_step / base_step))}


def setting_config(study: Study, setting: Setting, seed: int, out: Path) -> dict[str, Any]:
    """The run's config; an ``equal_compute`` setting gets its iterations from ``compute.json`` (written once,
    from the measured step times, so a resumed run keeps its length)."""
    if setting.equal_compute is None:
        return study.run_config(setting, seed)
    folder = run_dir(out, setting.name, seed)
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
    return final_model(run_dir(out, setting.name, seed), study.run_config(setting, seed)["val"]["use_ema"])


def final_model(folder: Path, use_ema: bool = True) -> torch.nn.Module:
    """The finished run's evaluation model, the one its validation measures: the EMA weights if it has them
    and ``use_ema`` (the config's ``val.use_ema``), else the plain weights."""
    from spnir.archs.checkpoint import model_from_checkpoint

    names = ("model_final_ema.pt", "model_final.pt") if use_ema else ("model_final.pt",)
    for name in names:
        if (folder / name).is_file():
            return model_from_checkpoint(folder / name).eval()
    raise SpnirError(f"{folder} has no {' / '.join(names)}: the run did not finish")


@torch.no_grad()
def evaluate_run(study: Study, config: dict[str, Any], folder: Path, model: torch.nn.Module | None = None
                 ) -> dict[str, Any]:
    """Per-image PSNR/SSIM of a finished run (or of ``model``) on every evaluation set (``metrics.json``)."""
    model = final_model(folder, config["val"]["use_ema"]) if model is None else model
    folder.mkdir(parents=True, exist_ok=True)
    val = config["val"]
    settings = MetricSettings(crop_border=val["crop_border"], y_channel=val["y_channel"], convention=val["convention"])
    sets = {}
    for name, dataset in eval_datasets(study, config):
        images, psnrs, ssims = [], [], []
        for i in range(len(dataset)):
            item = dataset[i]
            out = model(item["lq"].unsqueeze(0)).float().clamp(0, 1)
            p, s = settings.measure(out, item["gt"].unsqueeze(0))
            images.append(Path(str(item.get("gt_path", i))).name)
            psnrs.append(float(p[0]))
            ssims.append(float(s[0]))
        sets[name] = {"images": images, "psnr": psnrs, "ssim": ssims}
    result = {"metrics": settings.describe(), "sets": sets}
    with atomic_path(folder / "metrics.json") as tmp:
        tmp.write_text(json.dumps(result, indent=1))
    return result


def run_study(study: Study, out: str | Path, only: Sequence[str] | None = None,
              log: Callable[[str], None] = print) -> bool:
    """Train and evaluate every (setting, seed) not finished yet, seed by seed; ``True`` when all are done.

    Returns ``False`` (and stops) when a run was interrupted (SIGINT/SIGTERM): run the study again to resume.
    """
    from spnir.train import run_training

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    unknown = sorted(set(only or ()) - {s.name for s in study.settings})
    if unknown:
        raise SpnirError(f"{study.source}: --only names {unknown}, not settings of the study "
                         f"({', '.join(s.name for s in study.settings)})")
    chosen = [s for s in study.settings if only is None or s.name in only]
    for seed in study.seeds:
        for setting in chosen:
            folder = run_dir(out, setting.name, seed)
            if (folder / "metrics.json").is_file():
                continue
            if setting.evaluate_only:
                _evaluate_untrained(study, setting, seed, out, log)
                continue
            config = setting_config(study, setting, seed, out)
            if not (folder / "model_final.pt").is_file():
                log(f"study {study.name}: training {setting.name} seed {seed} in {folder}")
                result = run_training(config, folder, resume="auto")
                if not result.completed:
                    log(f"study {study.name}: {setting.name} seed {seed} {result.status}; run the study again to resume")
                    return False
            log(f"study {study.name}: evaluating {setting.name} seed {seed}")
            evaluate_run(study, config, folder)
    return True


def _evaluate_untrained(study: Study, setting: Setting, seed: int, out: Path, log: Callable[[str], None]) -> None:
    """An ``evaluate_only`` row: the same model and inputs for every seed, so measured once and copied."""
    folder = run_dir(out, setting.name, seed)
    done = [run_dir(out, setting.name, k) / "metrics.json" for k in study.seeds]
    done = [p for p in done if p.is_file()]
    if done:
        folder.mkdir(parents=True, exist_ok=True)
        with atomic_path(folder / "metrics.json") as tmp:
            tmp.write_text(done[0].read_text())
        return
    log(f"study {study.name}: evaluating {setting.name} (no training)")
    evaluate_run(study, study.run_config(setting, seed), folder, evaluated_model(study, setting, seed, out))


# ------------------------------------------------------------------------------------------- statistics


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularised incomplete beta function (modified Lentz)."""
    tiny, c, d = 1e-300, 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        for numerator in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                          -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return h


def incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularised incomplete beta function ``I_x(a, b)``."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def paired_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """Two-sided paired t-test of ``a - b``: ``(mean difference, t, p)``; ``p`` is NaN with < 2 pairs."""
    if len(a) != len(b):
        raise SpnirError(f"paired test needs equally many values, got {len(a)} and {len(b)}")
    diffs = [x - y for x, y in zip(a, b)]
    n = len(diffs)
    mean = sum(diffs) / n if n else math.nan
    if n < 2:
        return mean, math.nan, math.nan
    sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (n - 1))
    if sd == 0.0:
        return mean, (0.0 if mean == 0 else math.copysign(math.inf, mean)), (1.0 if mean == 0 else 0.0)
    t = mean / (sd / math.sqrt(n))
    dof = n - 1
    return mean, t, incomplete_beta(dof / 2.0, 0.5, dof / (dof + t * t))


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for one value)."""
    n = len(values)
    if n == 0:
        return math.nan, math.nan
    mean = sum(values) / n
    return mean, (math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0)


# ----------------------------------------------------------------------------------------------- report


def collect(study: Study, out: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``results[setting][seed]`` = the run's ``metrics.json`` content, for the runs that finished."""
    results: dict[str, dict[int, dict[str, Any]]] = {}
    for setting in study.settings:
        for seed in study.seeds:
            path = run_dir(out, setting.name, seed) / "metrics.json"
            if path.is_file():
                results.setdefault(setting.name, {})[seed] = json.loads(path.read_text())
    return results


def _per_image_mean(runs: dict[int, dict[str, Any]], seeds: Sequence[int], set_name: str, metric: str) -> list[float]:
    """Per-image value averaged over ``seeds``."""
    rows = [runs[s]["sets"][set_name][metric] for s in seeds]
    return [sum(v) / len(v) for v in zip(*rows)]


def summary_tables(study: Study, results: dict[str, dict[int, dict[str, Any]]], baseline: str | None = None
                   ) -> tuple[list[str], list[str]]:
    """Markdown lines: (the mean/std table, the difference-to-``baseline`` table; default the first baseline)."""
    baseline = baseline or study.baseline
    sets = sorted({name for runs in results.values() for r in runs.values() for name in r["sets"]},
                  key=lambda n: [s for r in results.values() for x in r.values() for s in x["sets"]].index(n))
    head = "| setting | seeds | " + " | ".join(f"{s} PSNR | {s} SSIM" for s in sets) + " |"
    table = [head, "|" + "---|" * (2 + 2 * len(sets))]
    for setting in study.settings:
        runs = results.get(setting.name, {})
        cells = []
        for s in sets:
            for metric, fmt in (("psnr", "{:.3f} ± {:.3f}"), ("ssim", "{:.4f} ± {:.4f}")):
                per_seed = [sum(r["sets"][s][metric]) / len(r["sets"][s][metric]) for r in runs.values() if s in r["sets"]]
                cells.append(fmt.format(*mean_std(per_seed)) if per_seed else "–")
        table.append(f"| {setting.name} | {len(runs)} | " + " | ".join(cells) + " |")
    diff = ["| setting | set | paired seeds | images | ΔPSNR (dB) | t | p (images) | p (seeds) | ΔSSIM | p (SSIM, images) "
            "| better / worse images |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = results.get(baseline, {})
    for setting in study.settings:
        if setting.name == baseline:
            continue
        runs = results.get(setting.name, {})
        seeds = [s for s in study.seeds if s in runs and s in base]
        if not seeds:
            continue
        groups = [(s, [s]) for s in sets] + ([("all sets", sets)] if len(sets) > 1 else [])
        for label, members in groups:
            a, b, a_ssim, b_ssim = [], [], [], []
            for s in members:
                a += _per_image_mean(runs, seeds, s, "psnr")
                b += _per_image_mean(base, seeds, s, "psnr")
                a_ssim += _per_image_mean(runs, seeds, s, "ssim")
                b_ssim += _per_image_mean(base, seeds, s, "ssim")
            d, t, p = paired_t_test(a, b)
            ds, _, ps = paired_t_test(a_ssim, b_ssim)
            per_seed = [[sum(r[k]["sets"][s]["psnr"][i] for s in members for i in range(len(r[k]["sets"][s]["psnr"])))
                         / len(a) for k in seeds] for r in (runs, base)]
            p_seeds = paired_t_test(*per_seed)[2]
            better = sum(x > y for x, y in zip(a, b))
            diff.append(f"| {setting.name} | {label} | {len(seeds)} | {len(a)} | {d:+.3f} | {t:.2f} | {p:.3g} | "
                        f"{p_seeds:.3g} | {ds:+.4f} | {ps:.3g} | {better} / {len(a) - better} |")
    return table, diff


def plot_curves(study: Study, out: Path, path: Path) -> list[str]:
    """Validation PSNR against iteration (mean over the finished seeds) per setting and set; the set names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spnir.train.logging import read_scalars

    curves: dict[str, dict[str, list[list[tuple[int, float]]]]] = {}
    for setting in study.settings:
        for seed in study.seeds:
            csv_path = run_dir(out, setting.name, seed) / "scalars.csv"
            if not csv_path.is_file():
                continue
            for name, series in read_scalars(csv_path).items():
                if name.startswith("val/") and name.endswith("/psnr"):
                    curves.setdefault(name.split("/")[1], {}).setdefault(setting.name, []).append(series)
    if not curves:
        return []
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (set_name, per_setting) in zip(axes[0], curves.items()):
        for index, (setting, runs) in enumerate(per_setting.items()):
            length = min(len(r) for r in runs)
            its = [r[i][0] for i in range(length) for r in runs[:1]]
            values = [sum(r[i][1] for r in runs) / len(runs) for i in range(length)]
            ax.plot(its, values, marker="osd^vx"[index % 6], markersize=4, linestyle=("-", "--", "-.", ":")[index % 4],
                    label=f"{setting} ({len(runs)} seeds)")
        ax.set_title(f"{set_name}: validation PSNR (mean over seeds)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return list(curves)


@torch.no_grad()
def plot_comparison(study: Study, out: Path, results: dict[str, dict[int, dict[str, Any]]], path: Path) -> str | None:
    """LQ (bicubic) | each setting (first finished seed) | GT on one crop, with the crop's PSNR (RGB)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spnir.imresize import imresize
    from spnir.metrics import psnr

    done = [s for s in study.settings if results.get(s.name)]
    if not done:
        return None
    first = done[0]
    seed = min(results[first.name])
    config = study.run_config(first, seed)
    datasets = dict(eval_datasets(study, config))
    set_name = study.compare.get("set", next(iter(datasets)))
    if set_name not in datasets:
        raise SpnirError(f"{study.source}: compare.set {set_name!r} is not an evaluation set ({list(datasets)})")
    item = datasets[set_name][int(study.compare.get("image", 0))]
    lq, gt = item["lq"].unsqueeze(0), item["gt"].unsqueeze(0)
    size = int(study.compare.get("size", 96))
    h, w = gt.shape[-2:]
    y, x = study.compare.get("at", [(h - size) // 2, (w - size) // 2])
    crop = (slice(None), slice(None), slice(y, y + size), slice(x, x + size))
    scale = gt.shape[-1] // lq.shape[-1]
    panels = [("LQ (bicubic)" if scale > 1 else "LQ", imresize(lq, scale).clamp(0, 1) if scale > 1 else lq.clamp(0, 1))]
    for setting in done:
        model = evaluated_model(study, setting, min(results[setting.name]), out)
        panels.append((setting.name, model(lq).float().clamp(0, 1)))
    fig, axes = plt.subplots(1, len(panels) + 1, figsize=(2.2 * (len(panels) + 1), 2.6))
    for ax, (title, img) in zip(axes, panels):
        part = img[crop]
        _show(ax, part)
        ax.set_title(f"{title}\n{float(psnr(part, gt[crop])):.2f} dB", fontsize=8)
    _show(axes[-1], gt[crop])
    axes[-1].set_title("GT", fontsize=8)
    for ax in axes:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=60)
    plt.close(fig)
    name = Path(str(item.get("gt_path", "image"))).name
    return f"{set_name} / {name}, crop {size}x{size} at (y={y}, x={x}); PSNR of the crop, all channels"


def _show(ax: Any, image: torch.Tensor) -> None:
    """An ``(1, C, h, w)`` crop: RGB as it is, one channel in gray."""
    if image.shape[1] == 1:
        ax.imshow(image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
    else:
        ax.imshow(image[0].permute(1, 2, 0).numpy())


def machine() -> str:
    """CPU model, core count, OS and torch build of this machine (for the report)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s) in the report process")


def speeds(study: Study, out: Path) -> dict[str, float]:
    """Mean training speed (it/s, as logged) of each setting over its runs."""
    from spnir.train.logging import read_scalars

    result = {}
    for setting in study.settings:
        values = []
        for seed in study.seeds:
            path = run_dir(out, setting.name, seed) / "scalars.csv"
            if path.is_file():
                values += [v for _, v in read_scalars(path).get("it_per_s", [])]
        if values:
            result[setting.name] = sum(values) / len(values)
    return result


def _setting_row(study: Study, setting: Setting, out: Path, its: dict[str, float]) -> str:
    overrides = " ".join(f"`{o}`" for o in setting.overrides) or "(none)"
    if setting.evaluate_only:
        return f"| {setting.name} | evaluated as loaded, no training | 0 | – | – |"
    if setting.equal_compute:
        overrides += f" (compute of `{setting.equal_compute[0]}`)"
    folders = [run_dir(out, setting.name, k) for k in study.seeds]
    iterations = sorted({_total_iter(study, setting, k, out) for k, f in zip(study.seeds, folders)
                         if setting.equal_compute is None or (f / "compute.json").is_file()})
    steps = [median_step_seconds(f) for f in folders if (f / "scalars.csv").is_file() and _has_step_s(f)]
    step = f"{sum(steps) / len(steps):.3f}" if steps else "–"
    return (f"| {setting.name} | {overrides} | {', '.join(map(str, iterations)) or '–'} | "
            f"{f'{its[setting.name]:.2f}' if setting.name in its else '–'} | {step} |")


def _total_iter(study: Study, setting: Setting, seed: int, out: Path) -> int:
    return setting_config(study, setting, seed, out)["train"]["total_iter"]


def _has_step_s(folder: Path) -> bool:
    from spnir.train.logging import read_scalars

    return bool(read_scalars(folder / "scalars.csv").get("step_s"))


def feature_spaces(study: Study) -> list[str]:
    """The SPN feature space of each setting that has a VGG-based negative term, in words."""
    from spnir.vgg_weights import resolve_feature_space

    lines = []
    for setting in study.settings:
        spn = study.run_config(setting, study.seeds[0])["spn"]
        if setting.evaluate_only or not spn["enabled"] or not isinstance(spn["features"], str):
            continue
        try:
            space = resolve_feature_space(spn["features"], spn["vgg_weights"], seed=study.seeds[0]).description
        except SpnirError:  # the weights are gone since the runs: name the setting as it was given
            space = f"{spn['features']} vgg_weights {spn['vgg_weights']}"
        lines.append(f"`{setting.name}`: {space}")
    return lines


def negative_term_rows(study: Study, out: Path) -> list[str]:
    """A table row per SPN setting: the last logged negative term, L1 loss and their ratio, mean over seeds."""
    from spnir.train.logging import read_scalars

    rows = []
    for setting in study.settings:
        shares, terms, pixels = [], [], []
        for seed in study.seeds:
            path = run_dir(out, setting.name, seed) / "scalars.csv"
            series = read_scalars(path) if path.is_file() else {}
            if series.get("spn/neg_term") and series.get("loss/pix"):
                term, pixel = series["spn/neg_term"][-1][1], series["loss/pix"][-1][1]
                shares.append(abs(term) / pixel)
                terms.append(term)
                pixels.append(pixel)
        if shares:
            term, pixel, share = (mean_std(values)[0] for values in (terms, pixels, shares))
            rows.append(f"| {setting.name} | {term:.3g} | {pixel:.4f} | {share:.3f} | {len(shares)} |")
    return rows


def _compute_lines(study: Study, out: Path) -> list[str]:
    lines = []
    for setting in study.settings:
        for seed in study.seeds:
            path = run_dir(out, setting.name, seed) / "compute.json"
            if path.is_file():
                c = json.loads(path.read_text())
                lines.append(f"- `{setting.name}` seed {seed}: {c['of']} step {c['of_step_s']:.3f} s / {c['base']} "
                             f"step {c['base_step_s']:.3f} s = {c['ratio']:.2f}; {c['of_iterations']} x "
                             f"{c['ratio']:.2f} -> {c['iterations']} iterations")
    return lines


def write_report(study: Study, out: str | Path, command: str = "", report_dir: str | Path | None = None) -> Path:
    """Write ``report.md``, ``curves.png``, ``comparison.png`` from the finished runs; returns the report path."""
    out = Path(out)
    folder = Path(report_dir) if report_dir is not None else out
    folder.mkdir(parents=True, exist_ok=True)
    results = collect(study, out)
    expected = len(study.settings) * len(study.seeds)
    finished = sum(len(r) for r in results.values())
    partial = finished < expected
    config = study.run_config(study.settings[0], study.seeds[0])
    lines = [f"# Study {study.name}" + (" (PARTIAL)" if partial else ""), ""]
    if partial:
        lines += [f"**Partial:** {finished} of {expected} runs finished; the tables use what finished.", ""]
    lines += ["## Setup", "",
              f"- Study file: `{study.source}`; runs: `spnir study -c {study.source} --out {out}`"
              + (f"; this report: `{command}`" if command else ""),
              f"- Machine: {machine()}",
              f"- Model: `{config['model']['name']}`" + (f" x{config['model']['scale']}" if config['model']['scale'] else "")
              + f" {config['model']['args'] or ''}" + (f" from `{config['model']['pretrained']}`" if config['model']['pretrained'] else "") + "; "
              f"{config['train']['total_iter']} iterations, batch {config['data']['train']['batch_size']}, "
              f"patch {config['data']['train']['patch_size']}, {config['optim']['type']} lr {config['optim']['lr']}, "
              f"{config['scheduler']['type']} schedule; evaluation EMA {config['ema']['decay']}",
              f"- Seeds: {study.seeds}; common overrides: {study.common or 'none'}",
              "- Metrics: " + (next(iter(next(iter(results.values())).values()))["metrics"] if results else "–"),
              "", "| setting | overrides |", "|---|---|"]
    its = speeds(study, out)
    lines[-2:] = ["| setting | overrides | iterations | training speed (it/s) | train step (s, median) |",
                  "|---|---|---|---|---|"]
    lines += [_setting_row(study, s, out, its) for s in study.settings]
    spaces = feature_spaces(study)
    if spaces:
        lines += ["", "SPN feature space: " + "; ".join(spaces) + "."]
    terms = negative_term_rows(study, out)
    if terms:
        lines += ["", "The negative term at the end of training (last logged values, batch means; mean over seeds):", "",
                  "| setting | negative term | L1 loss | \\|term\\| / L1 | seeds |", "|---|---|---|---|---|", *terms]
    compute = _compute_lines(study, out)
    if compute:
        lines += ["", "Equal-compute runs (step times measured in the same seed's runs, this machine):", "", *compute]
    table = summary_tables(study, results)[0] if results else []
    lines += ["", "## Results: mean ± std over seeds (per seed: mean over the set's images)", "", *table, ""]
    for baseline in study.baselines:
        diff = summary_tables(study, results, baseline)[1] if results else []
        lines += [f"## Difference to `{baseline}` (per image, averaged over the seeds both finished; "
                  "two-sided paired t-tests)", "",
                  "`p (images)` pairs the images (per-image PSNR averaged over seeds): it says whether the change is "
                  "consistent across images, not whether it exceeds the run-to-run noise of training. `p (seeds)` "
                  "pairs the seeds (set mean per seed); with 3 seeds it is weak. Compare ΔPSNR with the std over "
                  "seeds above.", "", *diff, ""]
    if plot_curves(study, out, folder / "curves.png"):
        lines += ["## Validation curves", "", "![curves](curves.png)", ""]
    caption = plot_comparison(study, out, results, folder / "comparison.png") if results else None
    if caption:
        lines += ["## Image comparison", "", f"{caption}.", "", "![comparison](comparison.png)", ""]
    missing = [f"{s.name}/seed{k}" for s in study.settings for k in study.seeds if k not in results.get(s.name, {})]
    if missing:
        lines += ["## Not finished", "", ", ".join(missing), ""]
    path = folder / "report.md"
    path.write_text("\n".join(lines))
    return path
