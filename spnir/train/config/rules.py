"""Rules across keys of a validated config: what a run would refuse at its start, checked from the settings alone
(no data, no weights are read). A rule a constructor enforces is its owner's validator, called here with the
config key in front of its message (:func:`spnir.spn.check_options`, :func:`spnir.negatives.check_bank_options`,
:func:`spnir.negative_sources.check_source_options`, :func:`spnir.ema.check_decay`,
:func:`spnir.features.check_layers`, :func:`spnir.restore.check_tiling`, :func:`spnir.train.optim.check_schedule`,
:func:`spnir.losses.build_loss`)."""
from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Any

from spnir.coerce import number
from spnir.ema import check_decay
from spnir.errors import SpnirError, shown
from spnir.features import check_layers
from spnir.losses import build_loss
from spnir.negative_sources import check_source_options
from spnir.negatives import check_bank_options
from spnir.restore import check_tiling
from spnir.spn import check_options
from spnir.train.config.schema import Config, Origin
from spnir.train.optim import check_schedule


def check_runnable(config: Config, origin: str | Origin = "config") -> None:
    """What a run would refuse at its start: rules across keys, the model preset with its scale and
    ``model.args``, the loss, each data set's degradations against the model's scale, the patch size, the SPN,
    EMA and schedule options."""
    origin = origin if isinstance(origin, Origin) else Origin(origin)
    _check_length(config, origin)
    sched = config["scheduler"]
    _owned(origin, "scheduler", lambda: check_schedule(sched, "scheduler."))
    _check_speed_settings(config, origin)
    _check_model(config["model"], origin)
    _check_spn(config["spn"], origin)
    if config["ema"]["decay"] is not None:
        _owned(origin, "ema", lambda: check_decay(config["ema"]["decay"], "ema.decay"))
    if config["log"]["wandb"]["project"] is not None:
        _check_wandb(config["log"], origin)
    from spnir.metrics.suite import METRICS, check_metric_names

    loss = config["loss"]
    _owned(origin, "loss", lambda: build_loss({"type": loss["type"], "loss_weight": loss["weight"], **loss["args"]}),
           [f"loss.{key}" for key in loss])
    metrics = config["val"]["metrics"]
    if not isinstance(metrics, list):
        raise SpnirError(f"{origin.at('val.metrics')}: val.metrics = {shown(metrics)}: expected a list drawn from "
                         f"{', '.join(METRICS)}")
    check_metric_names(metrics, f"{origin.at('val.metrics')}: val.metrics")
    scale = config["model"]["scale"] or 1
    _check_source(config["data"]["train"], "data.train", scale, origin)
    for i, entry in enumerate(config["data"]["val"]):
        _check_source(entry, f"data.val[{i}]", scale, origin)
    patch = config["data"]["train"]["patch_size"]
    if patch % scale:
        raise SpnirError(f"{origin.at('data.train.patch_size', 'model.scale')}: data.train.patch_size {patch} is "
                         f"not a multiple of model.scale {scale} (the LQ patch is patch_size / scale pixels)")


def _owned(origin: Origin, section: str, check: Callable[[], Any], keys: Sequence[str] = ()) -> None:
    """Run an owner's validator; its error gets in front where the ``section`` keys it names (else ``keys``)
    came from: the ``--set`` that gave one of them, else the file."""
    try:
        check()
    except SpnirError as exc:
        named = re.findall(rf"\b{re.escape(section)}\.\w+", str(exc)) or [section, *keys]
        raise SpnirError(f"{origin.at(*named)}: {exc}") from None


def _check_length(config: Config, origin: Origin) -> None:
    train, sched = config["train"], config["scheduler"]
    if (train["total_iter"] is None) == (train["epochs"] is None):
        raise SpnirError(f"{origin.at('train.total_iter', 'train.epochs')}: set exactly one of train.total_iter "
                         f"and train.epochs")
    if sched["unit"] == "epoch" and train["epochs"] is None:
        raise SpnirError(f"{origin.at('scheduler.unit', 'train.epochs')}: scheduler.unit = epoch needs train.epochs")


def _check_speed_settings(config: Config, origin: Origin) -> None:
    """``optim.fused`` / ``optim.foreach`` exclude each other; the tiler's rule on ``val.tile``/``val.tile_overlap``."""
    if config["optim"]["fused"] and config["optim"]["foreach"]:
        raise SpnirError(f"{origin.at('optim.fused', 'optim.foreach')}: optim.fused and optim.foreach are both "
                         "true; choose one")
    val = config["val"]
    _owned(origin, "val", lambda: check_tiling(val["tile"], val["tile_overlap"], "val."))


def _check_model(model: Config, origin: Origin) -> None:
    """The preset (or ``module:callable``) exists, takes ``model.scale`` and accepts ``model.args``."""
    from spnir.archs.arguments import ArgumentError, check_arguments
    from spnir.archs.registry import check_overrides, check_scale

    name = model["name"]
    try:
        if ":" in name:
            model["args"] = check_arguments(import_factory(name), model["args"], f"model {name}", "model.args.",
                                            skip=("scale",))
        else:
            check_scale(name, model["scale"], "model.scale")
            model["args"] = check_overrides(name, model["args"], "model.args.")
    except ArgumentError as exc:
        raise SpnirError(f"{origin.at('model.args.' + exc.key)}: {exc}") from None
    except SpnirError as exc:
        raise SpnirError(f"{origin.at('model.name', 'model.scale')}: {exc}") from None


def import_factory(name: str) -> Any:
    """The callable ``module:attr`` names (``model.name`` of a custom model)."""
    import importlib

    module_name, _, attr = name.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise SpnirError(f"model.name = {shown(name)}: cannot import {attr} from {module_name}: {exc}") from exc


def _check_wandb(log: Config, origin: Origin) -> None:
    if not log["tensorboard"]:
        raise SpnirError(f"{origin.at('log.wandb.project', 'log.tensorboard')}: log.wandb syncs the TensorBoard "
                         "events: set log.tensorboard: true")
    from spnir.optional import require

    require("wandb", f"{origin.at('log.wandb.project')}: log.wandb")


def _check_spn(spn: Config, origin: Origin) -> None:
    """The ``spn`` options through the validators of the objects they build (also when ``enabled`` is false, as
    a type error would be); when enabled, the VGG layers against ``spn.features`` and the source's needs."""
    weight = spn["weight"]
    if weight != "auto" and number(weight) is not None:
        spn["weight"] = weight = number(weight)
    _owned(origin, "spn", lambda: check_options(
        spn["layer_weights"], weight, spn["form"], spn["max_distance"], spn["target_ratio"],
        spn["uncertainty_weight"], prefix="spn."))
    if spn["source"] == "history":
        _owned(origin, "spn", lambda: check_bank_options(
            spn["periods"], spn["decays"], spn["init_decay"], spn["adaptive_threshold"], spn["adaptive_decay"],
            prefix="spn."))
    if not spn["enabled"]:
        return
    _owned(origin, "spn",
           lambda: check_layers(spn["features"], spn["layer_weights"], "spn.layer_weights", "spn.features"))
    _owned(origin, "spn", lambda: check_source_options(spn, prefix="spn."))


def _check_source(source: Config, key: str, scale: int, origin: Origin) -> None:
    kind = source["type"]
    where = f"{origin.at(key)}: {key}" + (f" ({shown(source['name'])})" if "name" in source else "")
    if kind == "paired" and (source["lq"] is None or source["gt"] is None):
        raise SpnirError(f"{where} of type paired needs both lq and gt folders")
    if kind == "clean" and source["gt"] is None:
        raise SpnirError(f"{where} of type clean needs a gt folder")
    if kind in ("clean", "builtin") and not source["degradations"]:
        raise SpnirError(f"{where} of type {kind} needs degradations, e.g. [{{type: bicubic, scale: 4}}]")
    if kind == "paired" and source["layout"] == "csv" and not source["pairs"]:
        raise SpnirError(f"{where}: layout csv needs pairs, a CSV file with lines 'lq,gt'")
    if kind == "paired" and source["degradations"]:
        raise SpnirError(f"{where}: degradations apply to clean/builtin sets, not to paired folders")
    if source["degradations"]:
        from spnir.data.degrade import build_degradation

        degradation = build_degradation(source["degradations"], where=f"{where}.degradations")
        if degradation.scale != scale:
            raise SpnirError(f"{origin.at(key, 'model.scale')}: {key}.degradations scale by {degradation.scale}, "
                             f"but model.scale is {scale}")

