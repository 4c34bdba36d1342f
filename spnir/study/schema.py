"""The study file: its keys, the settings, and the checks made before any training (see :mod:`spnir.study`)."""
from __future__ import annotations

import copy
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spnir.coerce import conform, describe_type
from spnir.errors import SpnirError, shown
from spnir.metrics.suite import check_metric_names
from spnir.yamlfile import read_yaml

# The study file's keys and the types they take (checked by :func:`spnir.coerce.conform`, like the training config).
STUDY_KEYS: dict[str, Any] = {
    "name": str, "config": str | dict[str, Any], "set": list[str] | None, "seeds": list[int],
    "settings": list[dict[str, Any]], "eval": list[dict[str, Any]] | None, "metrics": list[str],
    "compare": dict[str, Any] | None, "baseline": str | list[str],
}
SETTING_KEYS: dict[str, Any] = {"name": str, "set": list[str] | None, "evaluate_only": bool,
                                "equal_compute": dict[str, str] | None}
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
    raw = _checked(raw, STUDY_KEYS, str(path), required=("config", "settings"))
    config = raw["config"]
    if isinstance(config, str):
        config = str(path.parent / config)
    settings = [_setting(path, i, entry) for i, entry in enumerate(raw["settings"])]
    names = [s.name for s in settings]
    if not settings or len(set(names)) != len(names):
        raise SpnirError(f"{path}: settings need distinct names, got {names}")
    _check_equal_compute(path, settings)
    seeds = raw.get("seeds", [0])
    if not seeds or any(s < 0 for s in seeds):
        raise SpnirError(f"{path}: seeds must be a non-empty list of integers >= 0, got {shown(seeds)}")
    baselines = raw.get("baseline", names[0])
    baselines = baselines if isinstance(baselines, list) else [baselines]
    for baseline in baselines:
        if baseline not in names:
            raise SpnirError(f"{path}: baseline {baseline!r} is not one of the settings {names}")
    metrics = check_metric_names(raw.get("metrics", DEFAULT_METRICS), f"{path}: metrics")
    study = Study(name=raw.get("name", path.stem), config=config, common=raw.get("set") or [],
                  seeds=seeds, settings=settings, eval_sets=raw.get("eval"), compare=raw.get("compare") or {},
                  baselines=baselines, source=str(path), metrics=metrics)
    vgg_weights = set()
    for setting in settings:  # fail before any training
        try:
            vgg_weights.add(study.run_config(setting, seeds[0])["val"]["vgg_weights"])
        except SpnirError as exc:
            raise SpnirError(f"{path}: setting {setting.name!r}: {exc}") from exc
    _check_perceptual(path, metrics, vgg_weights)
    return study


def _checked(raw: dict[str, Any], keys: dict[str, Any], where: str, required: tuple[str, ...] = ()) -> dict[str, Any]:
    """``raw`` with each value converted to its key's type; an unknown key (with the near match), a missing
    required one or a value of the wrong type is an error naming it."""
    for key in raw:
        if key not in keys:
            near = difflib.get_close_matches(str(key), list(keys), n=1, cutoff=0.6)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise SpnirError(f"{where}: unknown key {shown(key)}{hint} (known: {', '.join(keys)})")
    for key in required:
        if key not in raw:
            raise SpnirError(f"{where}: missing required key {key!r}")
    out = {}
    for key, value in raw.items():
        ok, out[key] = conform(value, keys[key])
        if not ok:
            raise SpnirError(f"{where}: {key} = {shown(value)}: expected {describe_type(keys[key])}")
    return out


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


def _setting(path: Path, i: int, entry: dict[str, Any]) -> Setting:
    entry = _checked(entry, SETTING_KEYS, f"{path}: settings[{i}]", required=("name",))
    equal = entry.get("equal_compute")
    if equal is not None and set(equal) != {"of", "base"}:
        raise SpnirError(f"{path}: settings[{i}].equal_compute must be {{of: SETTING, base: SETTING}}, got {equal!r}")
    only = entry.get("evaluate_only", False)
    if only and (equal or entry.get("set")):
        raise SpnirError(f"{path}: settings[{i}]: evaluate_only runs no training, so it takes no set or "
                         "equal_compute")
    return Setting(entry["name"], entry.get("set") or [], only, (equal["of"], equal["base"]) if equal else None)


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
