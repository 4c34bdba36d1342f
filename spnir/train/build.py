"""From a validated config to the parts of the training loop: model, data, loss, SPN, EMA, optimiser.

Everything that can fail on bad input (missing folders, unset ``${VAR}``, unknown preset, a patch larger
than an image, missing VGG weights) fails here, before the first iteration.
"""
from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Iterator
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from spnir.archs import create_model
from spnir.archs.model_files import load_checkpoint, model_from_checkpoint
from spnir.data.datasets import CleanImages, Grayscale, ImageSource, Items, MergedImages, PatchDataset, SyntheticPairs
from spnir.data.degrade import Compose, build_degradation
from spnir.data.paired import OnError, PairedFolder
from spnir.data.sampling import EpochSampler
from spnir.ema import ModelEMA
from spnir.errors import Param, SpnirError, shown
from spnir.features import VGGFeatures
from spnir.losses import build_loss
from spnir.metrics import MetricSettings
from spnir.metrics.suite import MetricSuite
from spnir.negative_sources import SOURCES
from spnir.spn import SPN, NegativeLoss
from spnir.train.config import Config, expand_path, import_factory
from spnir.train.distributed import DistContext, ShardedBatchSampler
from spnir.train.optim import build_optimizer, build_scheduler
from spnir.train.trainer import TrainParts
from spnir.train.validation import Inference, ValidationSet, Validator
from spnir.weights.vgg import resolve_feature_space


def seed_everything(seed: int) -> None:
    """The same seed on every rank: identical initial weights and fresh negatives everywhere."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(model_cfg: Config) -> nn.Module:
    """A preset from :mod:`spnir.archs`, or ``module:callable`` (called with ``scale`` when set, and args)."""
    name, scale, args = model_cfg["name"], model_cfg["scale"], model_cfg["args"]
    if ":" in name:
        model = import_factory(name)(**({"scale": scale} if scale else {}), **args)
    else:
        model = create_model(name, scale, **args)
    if model_cfg["pretrained"]:
        path = expand_path(model_cfg["pretrained"], "model.pretrained")
        load_checkpoint(model, path, key=model_cfg["pretrained_key"], strict=model_cfg["pretrained_strict"])
    return model


BUILTIN_PREFIX = "builtin:"


def _source(entry: Config, scale: int, where: str, verify: bool,
            on_error: OnError) -> tuple[ImageSource, Compose | None]:
    """``(dataset, degradation or None)`` of one data entry (one channel when ``channels: 1``)."""
    dataset, degradation = _color_source(entry, scale, where, verify, on_error)
    return (Grayscale(dataset) if entry["channels"] == 1 else dataset), degradation


def _color_source(entry: Config, scale: int, where: str, verify: bool,
                  on_error: OnError) -> tuple[ImageSource, Compose | None]:
    """``(dataset, degradation or None)`` of one data entry as read; paths expanded here. Every image file is
    checked now, from its header or (``verify``) decoded; one that fails stops the run or is skipped
    (``on_error``)."""
    kind = entry["type"]
    if kind == "paired":
        pairs = expand_path(entry["pairs"], f"{where}.pairs") if entry["pairs"] else None
        folder = PairedFolder(expand_path(entry["lq"], f"{where}.lq"), expand_path(entry["gt"], f"{where}.gt"),
                              layout=entry["layout"], scale=scale, pairs=pairs, verify=verify, on_error=on_error)
        return folder, None
    degradation = build_degradation(entry["degradations"], where=f"{where}.degradations")
    first = (CleanImages.from_folder(expand_path(entry["gt"], f"{where}.gt"), verify=verify, on_error=on_error)
             if kind == "clean" else CleanImages.builtin(entry["split"]))
    extra = [_clean_images(name, f"{where}.extra_gt[{i}]", verify, on_error)
             for i, name in enumerate(entry["extra_gt"])]
    return (MergedImages([first, *extra]) if extra else first), degradation


def _clean_images(name: str, where: str, verify: bool, on_error: OnError) -> CleanImages:
    """``builtin:train`` / ``builtin:val`` (the embedded photographs), else a folder of images."""
    if name.startswith(BUILTIN_PREFIX):
        split = name[len(BUILTIN_PREFIX):]
        if split not in ("train", "val"):
            raise SpnirError(f"{where} = {name!r}: expected builtin:train or builtin:val")
        return CleanImages.builtin(split)
    return CleanImages.from_folder(expand_path(name, where), verify=verify, on_error=on_error)


def build_train_data(config: Config) -> PatchDataset:
    """The training patches of ``data.train``: a paired folder, or clean images plus their degradation."""
    entry = config["data"]["train"]
    scale = config["model"]["scale"] or 1
    source, degradation = _source(entry, scale, "data.train", config["data"]["verify"], on_error="stop")
    return PatchDataset(source, entry["patch_size"], scale=scale, degradation=degradation, hflip=entry["flip"],
                        vflip=entry["rot90"], rot90=entry["rot90"], enlarge_ratio=entry["enlarge"],
                        base_seed=config["seed"], cache=entry["cache"])


def build_val_sets(config: Config) -> list[ValidationSet]:
    """Each ``data.val`` entry as whole LQ/GT image pairs (degraded once, with a fixed seed, if synthetic)."""
    scale = config["model"]["scale"] or 1
    sets = []
    for i, entry in enumerate(config["data"]["val"]):
        source, degradation = _source(entry, scale, f"data.val[{i}]", config["data"]["verify"],
                                      config["val"]["on_error"])
        dataset: Items = source if degradation is None else SyntheticPairs(source, degradation, seed=config["seed"])
        if entry["max_images"]:  # every source here is a torch Dataset
            dataset = Subset(cast(Dataset, dataset), range(min(entry["max_images"], len(dataset))))
        sets.append(ValidationSet(entry["name"], dataset, skipped=list(getattr(source, "skipped", []))))
    return sets


def build_negative_loss(config: Config, model: nn.Module, device: torch.device) -> NegativeLoss | None:
    """The negative term of the ``spn`` section (SPN, or a NegativeLoss of another source); None when off."""
    cfg = config["spn"]
    if not cfg["enabled"]:
        return None
    features = VGGFeatures(cfg["features"], list(cfg["layer_weights"]), vgg_weights=cfg["vgg_weights"],
                           input_norm=cfg["input_norm"], range_norm=cfg["range_norm"], seed=config["seed"])
    common = dict(weight=cfg["weight"], layer_weights=cfg["layer_weights"], features=features, form=cfg["form"],
                  max_distance=cfg["max_distance"], target_ratio=cfg["target_ratio"],
                  uncertainty_weight=cfg["uncertainty_weight"], feature_dtype=cfg["feature_dtype"])
    if cfg["source"] == "history":
        return SPN(model, periods=cfg["periods"], decays=cfg["decays"], init_decay=cfg["init_decay"],
                   fresh_model=fresh_models(config["model"], config["seed"]),
                   adaptive_threshold=cfg["adaptive_threshold"], adaptive_decay=cfg["adaptive_decay"],
                   **common).to(device)
    return NegativeLoss(build_negative_source(cfg, config["seed"]), **common).to(device)


def fresh_models(model_cfg: Config, seed: int) -> Callable[[], nn.Module]:
    """The factory of the negatives' fresh copies (``init_decay``): each call builds a new instance of the
    configured architecture (preset or ``module:callable``, without ``pretrained``), so its weights come from
    the architecture's own initialisation. Call ``k`` draws from ``torch.manual_seed(seed + 1 + k)`` on a
    forked RNG: the same fresh weights on every rank and in every run, and the global RNG left untouched."""
    calls = itertools.count()
    untrained = {**model_cfg, "pretrained": None}

    def fresh() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1 + next(calls))
            return build_model(untrained)

    return fresh


def build_negative_source(cfg: Config, seed: int) -> nn.Module:
    """The non-history negative source named by ``spn.source`` (:data:`spnir.negative_sources.SOURCES`); the
    models of ``spn.frozen`` loaded first."""
    build = SOURCES[cfg["source"]]
    if build is None:
        raise SpnirError(f"spn.source {cfg['source']} is built by spnir.spn.SPN, not as a separate source")
    paths = _frozen_paths(cfg) if cfg["source"] == "frozen" else []
    frozen = [model_from_checkpoint(expand_path(str(p), f"spn.frozen[{i}]")) for i, p in enumerate(paths)]
    return build({**cfg, "frozen": frozen}, seed)


def samples_per_step(config: Config) -> int:
    """Samples of one optimiser step over all ranks: ``data.train.batch_size`` times ``train.accumulate``."""
    return config["data"]["train"]["batch_size"] * config["train"]["accumulate"]


def _batches(dataset: PatchDataset, config: Config, ctx: DistContext):
    """``start_step -> iterator`` of this rank's batches from ``start_step`` on (a fresh loader each call).

    A batch holds the samples of one optimiser step (the trainer cuts it into ``train.accumulate``
    micro-batches), so K micro-batches of B see exactly the samples of one batch of K * B. On CUDA the
    loader pins its batches (the trainer copies them with ``non_blocking``), keeps its workers between
    epochs and prefetches 4 batches per worker."""
    entry = config["data"]["train"]
    order = EpochSampler(len(dataset), base_seed=config["seed"]).order

    def start(step: int) -> Iterator[dict[str, Any]]:
        sampler = ShardedBatchSampler(order, len(dataset), samples_per_step(config), ctx, start_step=step)
        workers = entry["workers"]
        # The loader's own generator: creating an iterator must not draw from torch's global RNG, which the
        # model may use (drop-path) and which a resumed run restores exactly. Samples do not depend on it.
        loader = DataLoader(dataset, batch_sampler=sampler, num_workers=workers,
                            pin_memory=ctx.device.type == "cuda", persistent_workers=workers > 0,
                            prefetch_factor=4 if workers else None,
                            generator=torch.Generator().manual_seed(config["seed"] + step))
        return _one_line_errors(iter(loader))

    return start


_WORKER_ERROR = f"{SpnirError.__module__}.{SpnirError.__name__}: "


def _one_line_errors(batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """``batches``, with a :class:`SpnirError` from a DataLoader worker (which comes back with the worker's
    traceback as its text) reduced to its own message, and the switch that finds such files up front."""
    try:
        yield from batches
    except SpnirError as exc:
        text = str(exc)
        if "Original Traceback" in text and _WORKER_ERROR in text:
            text = text.rsplit(_WORKER_ERROR, 1)[1].strip()
        raise SpnirError(f"{text} (data.verify: true decodes every image before the first step)") from None


def use_channels_last(config: Config, device: torch.device) -> bool:
    """``train.channels_last``: ``auto`` is on for CUDA, off for the CPU (where it measured 2-3x slower)."""
    setting = config["train"]["channels_last"]
    return device.type == "cuda" if setting == "auto" else bool(setting)


def set_cuda_backends(config: Config, device: torch.device) -> list[str]:
    """``train.tf32`` and ``train.cudnn_benchmark`` on CUDA; elsewhere they do nothing and a note says so."""
    train = config["train"]
    asked = [k for k, on in (("tf32", train["tf32"] is not None), ("cudnn_benchmark", train["cudnn_benchmark"]))
             if on]
    if device.type != "cuda":
        return [f"train.{k} has no effect on {device.type} (CUDA only)" for k in asked]
    if train["tf32"] is not None:
        torch.backends.cuda.matmul.allow_tf32 = train["tf32"]
        torch.backends.cudnn.allow_tf32 = train["tf32"]
    torch.backends.cudnn.benchmark = train["cudnn_benchmark"]
    return []


# How a config's user asks for random VGG weights (the message of missing ImageNet weights says it).
ASK_RANDOM_VGG = Param("overrides", ["spn.vgg_weights=random"], python="spn.vgg_weights: random in the config")


def check_weight_files(config: Config) -> None:
    """The weight files the run will read exist (VGG, ``spn.frozen``): said before any data is read."""
    spn = config["spn"]
    if not spn["enabled"]:
        return
    resolve_feature_space(spn["features"], spn["vgg_weights"], ask_random=ASK_RANDOM_VGG)
    if spn["source"] == "frozen":
        for i, entry in enumerate(_frozen_paths(spn)):
            path = expand_path(str(entry), f"spn.frozen[{i}]")
            if not path.is_file():
                raise SpnirError(f"spn.frozen[{i}] = {shown(str(entry))}: {path} is a folder; expected a "
                                 "checkpoint file")


def _frozen_paths(spn: Config) -> list[Any]:
    return spn["frozen"] if isinstance(spn["frozen"], list) else [spn["frozen"]]


def build_parts(config: Config, ctx: DistContext) -> TrainParts:
    """All parts of a run, on ``ctx.device``; the model is wrapped in DDP when there are several ranks."""
    check_weight_files(config)
    seed_everything(config["seed"])
    channels_last = use_channels_last(config, ctx.device)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    # The negatives and the EMA copy the model. Module.to's stub lacks memory_format, which it takes at run time.
    model = build_model(config["model"]).to(ctx.device, memory_format=layout)  # type: ignore[call-overload]
    train_set = build_train_data(config)
    val_sets = build_val_sets(config) if ctx.is_main else []
    global_batch = samples_per_step(config)
    steps_per_epoch = len(train_set) // global_batch
    if steps_per_epoch == 0:
        raise SpnirError(f"the training set has {len(train_set)} samples, fewer than data.train.batch_size "
                         f"x train.accumulate = {global_batch}; raise data.train.enlarge or lower the batch size")
    total_iter = config["train"]["total_iter"] or config["train"]["epochs"] * steps_per_epoch
    forward: nn.Module = model
    if ctx.distributed:
        forward = nn.parallel.DistributedDataParallel(
            model, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None)
    if config["train"]["compile"]:
        forward = torch.compile(forward)  # type: ignore[assignment]  # a compiled module is an nn.Module
    spn = build_negative_loss(config, model, ctx.device)
    if spn is not None and channels_last:
        spn.to(memory_format=layout)  # type: ignore[call-overload]  # the feature extractor and any negatives
    ema = ModelEMA(model, config["ema"]["decay"]).to(ctx.device) if config["ema"]["decay"] is not None else None
    optimizer = build_optimizer(model.parameters(), config["optim"])
    scheduler = build_scheduler(optimizer, config["scheduler"], total_iter, steps_per_epoch)
    val = config["val"]
    validator = None
    if val_sets:
        settings = MetricSettings(crop_border=val["crop_border"], y_channel=val["y_channel"],
                                  convention=val["convention"])
        inference = Inference(scale=config["model"]["scale"] or 1, tile=val["tile"], tile_overlap=val["tile_overlap"],
                              amp=val["amp"], save_images=val["save_images"])
        metrics = MetricSuite.build(val["metrics"], settings, val["vgg_weights"], ctx.device)
        validator = Validator(val_sets, val["metrics"], settings, ctx.device, inference, suite=metrics)
    loss_cfg = config["loss"]
    loss_fn = build_loss({"type": loss_cfg["type"], "loss_weight": loss_cfg["weight"], **loss_cfg["args"]})
    return TrainParts(
        model=model, forward=forward, loss_fn=loss_fn.to(ctx.device), optimizer=optimizer, scheduler=scheduler,
        batches=_batches(train_set, config, ctx), total_iter=int(total_iter), spn=spn, ema=ema,
        validator=validator, amp=config["train"]["amp"], grad_clip=config["train"]["grad_clip"], config=config,
        accumulate=config["train"]["accumulate"], channels_last=channels_last,
        notes=set_cuda_backends(config, ctx.device),
    )


def describe(parts: TrainParts, config: Config) -> list[str]:
    """Lines for the log: what this run trains, and in which feature space."""
    params = sum(p.numel() for p in parts.model.parameters())
    lines = [f"model {config['model']['name']} (scale {config['model']['scale']}), {params:,} parameters",
             f"{parts.total_iter} iterations, global batch {config['data']['train']['batch_size']}"
             + (f" x {parts.accumulate} accumulated" if parts.accumulate > 1 else "") + ", "
             f"patch {config['data']['train']['patch_size']}, loss {config['loss']['type']}"]
    if parts.spn is not None:
        cfg = config["spn"]
        schedule = (f"periods {cfg['periods']}, decays {cfg['decays']}, init_decay {cfg['init_decay']}"
                    if cfg["source"] == "history" else f"negatives: {cfg['source']}")
        extra = f", uncertainty weight {cfg['uncertainty_weight']}" if cfg["uncertainty_weight"] else ""
        lines.append(f"SPN ({cfg['form']} form) weight {cfg['weight']}, layers {cfg['layer_weights']}, {schedule}"
                     f"{extra}; feature space: {parts.spn.feature_space}")
    else:
        lines.append("SPN off (baseline)")
    for vset in parts.validator.sets if parts.validator is not None else []:
        lines += [f"validation set {vset.name}: skipped {reason}" for _, reason in vset.skipped]  # names the file
    lines += parts.notes
    if parts.ema is not None:
        lines.append(f"evaluation EMA decay {config['ema']['decay']}")
    if math.isfinite(parts.grad_clip or math.nan):
        lines.append(f"gradient norm clipped at {parts.grad_clip}")
    return lines
