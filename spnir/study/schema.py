"""The study file: its keys, the settings, and the checks made before any training (see :mod:`spnir.study`)."""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spnir.errors import SpnirError
from spnir.metrics.suite import check_metric_names
from spnir.yamlfile import read_yaml

STUDY_KEYS = ("name", "config", "set", "seeds", "settings", "eval", "metrics", "compare", "baseline")
DEFAULT_METRICS = ("psnr", "ssim")  # what metrics.json holds per image when the study file names none
RUN_LAYOUT = "runs/{setting}/seed{seed}"  # a run's folder under the study's output folder


def run_dir(out: str | Path, setting: str, seed: int) -> Path:
    """The folder of one run of a study file's study: ``OUT/runs/<setting>/seed<k>``."""
    return Path(out) / RUN_LAYOUT.format(setting=setting, seed=seed)


@dataclass
class Setting:
    """One way of training the study's network: a name and ``--set`` overrides (or evaluated untrained)."""

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
    layout: str = RUN_LAYOUT            # a run's folder under OUT, from {setting} and {seed}
    metrics: list[str] = field(default_factory=lambda: list(DEFAULT_METRICS))  # measured per image, in order

    @property
    def baseline(self) -> str:
        """The first setting the others are compared with."""
        return self.baselines[0]

    def run_dir(self, out: str | Path, setting: str, seed: int) -> Path:
        """The folder of one run under the output folder ``out``."""
        return Path(out) / self.layout.format(setting=setting, seed=seed)

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
    metrics = check_metric_names(raw.get("metrics", DEFAULT_METRICS), f"{path}: metrics")
    study = Study(name=str(raw.get("name", path.stem)), config=config, common=[str(s) for s in raw.get("set") or []],
                  seeds=seeds, settings=settings, eval_sets=raw.get("eval"), compare=dict(raw.get("compare") or {}),
                  baselines=baselines, source=str(path), metrics=metrics)
    vgg_weights = set()
    for setting in settings:  # fail before any training
        try:
            vgg_weights.add(study.run_config(setting, seeds[0])["val"]["vgg_weights"])
        except SpnirError as exc:
            raise SpnirError(f"{path}: setting {setting.name!r}: {exc}") from exc
    _check_perceptual(path, metrics, vgg_weights)
    return study


def _check_perceptual(path: Path, metrics: list[str], vgg_weights: set[str]) -> None:
    """LPIPS/DISTS can be built on each run's ``val.vgg_weights`` with their learned files, before training."""
    from spnir.metrics.perceptual import PERCEPTUAL

    for name in (m for m in metrics if m in PERCEPTUAL):
        for weights in sorted(vgg_weights):
            try:
                PERCEPTUAL[name](weights)
            except SpnirError as exc:
                raise SpnirError(f"{path}: metrics names {name} (measured on the runs' val.vgg_weights = "
                                 f"{weights!r}): {exc}") from exc


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
