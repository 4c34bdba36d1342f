"""BasicSR-style option files (and the SPN authors' own) mapped onto spnir's config.

Every key of the option file is either mapped, noted as having no effect here (``notes``: multi-GPU
settings that torchrun replaces, logging back-ends, I/O hints), or refused: a setting that would change
the training and that spnir does not implement stops with an error naming it, never silently dropped.

``model_type`` decides what the other keys mean, as the class it names does (:data:`MODEL_TYPES`, read
from the classes of the SPN authors' fork, github.com/Aitical/MCLIR, and NAFNet's own trainer): whether
``neg_*`` settings make negatives, how ``use_grad_clip`` clips, which network is validated, the default of
``neg_start``. The notes say, per key, what it became.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from spnir.errors import SpnirError
from spnir.losses import LOSSES

Options = dict[str, Any]

# network_g type -> (identifying arguments -> preset name), official values that need no override.
_NETWORKS: dict[str, tuple[str, dict[tuple, str], dict[str, Any]]] = {
    "EDSR": ("num_feat", {(64,): "edsr-baseline", (256,): "edsr"},
             {"num_in_ch": 3, "num_out_ch": 3, "img_range": 255.0, "rgb_mean": [0.4488, 0.4371, 0.4040]}),
    "SwinIR": ("embed_dim", {(60,): "swinir-light", (180,): "swinir"},
               {"in_chans": 3, "window_size": 8, "img_range": 1.0, "mlp_ratio": 2, "resi_connection": "1conv"}),
    "NAFNet": ("width", {(32,): "nafnet-width32", (64,): "nafnet-width64"},
               {"img_channel": 3, "enc_blk_nums": [1, 1, 1, 28], "middle_blk_num": 1, "dec_blk_nums": [1, 1, 1, 1]}),
    "FFANet": ("gps", {(3,): "ffanet"}, {"blocks": 19}),
}
_NETWORK_ALIASES = {"NAFNetLocal": "NAFNet", "FFA": "FFANet"}
# Preset defaults beyond the identifying key (a network_g value equal to these needs no override).
_PRESET_DEFAULTS: dict[str, dict[str, Any]] = {
    "edsr-baseline": {"num_block": 16, "res_scale": 1},
    "edsr": {"num_block": 32, "res_scale": 0.1},
    "swinir-light": {"depths": [6, 6, 6, 6], "num_heads": [6, 6, 6, 6], "upsampler": "pixelshuffledirect"},
    "swinir": {"depths": [6] * 6, "num_heads": [6] * 6, "upsampler": "pixelshuffle"},
}

_LOSS_TYPES = set(LOSSES)  # the BasicSR class names spnir.losses implements
_SCHEDULERS = {"MultiStepLR", "MultiStepRestartLR", "CosineAnnealingRestartLR", "TrueCosineAnnealingLR",
               "CosineAnnealingLR", "LinearLR"}
# Keys with no effect in spnir, and why.
_IGNORED_TOP = {
    "num_gpu": "the number of processes comes from torchrun (--nproc_per_node)",
    "dist_params": "torchrun sets up the process group",
    "is_train": "implied by spnir train",
    "dist": "torchrun sets up the process group",
    "rank": "torchrun sets the rank",
    "world_size": "torchrun sets the world size",
    "complie": "use train.compile",
    "find_unused_parameters": "spnir's DDP wrapper decides",
    "use_static_graph": "spnir's DDP wrapper decides",
}
_IGNORED_DATA = {"name", "io_backend", "filename_tmpl", "use_shuffle", "pin_memory", "prefetch_mode",
                 "num_worker_per_gpu", "batch_size_per_gpu", "type", "phase", "scale", "cache_data"}


@dataclass(frozen=True)
class ModelType:
    """What one BasicSR model class does with the settings spnir maps, as its code does it.

    ``negatives``: ``None`` (the class has none; ``neg_*`` unread), ``"single"`` (one negative, scalar
    ``neg_iter``/``neg_decay``), ``"multi"`` (``neg_iter``/``neg_decay`` lists, refreshed periodically) or
    ``"adaptive"`` (``len(neg_iter)`` negatives refreshed only when the residual std exceeds ``neg_t``).
    ``neg_start``: its default when the file has none. ``clip``: ``"norm"`` (a true ``use_grad_clip`` is
    passed as the max norm, ``true`` -> 1.0), ``"nafnet"`` (any true value clips at 0.01; on by default) or
    ``None`` (never read). ``ema``: whether ``ema_decay`` builds an EMA copy; ``validates_ema``: whether
    validation runs on it. ``ffanet_input``: ``feed_data`` normalises the input with FFA-Net's mean/std.
    """

    source: str
    negatives: str | None = None
    neg_start: float | None = None
    clip: str | None = "norm"
    ema: bool = True
    validates_ema: bool = True
    ffanet_input: bool = False


_FORK = "Aitical/MCLIR basicsr/models/"
MODEL_TYPES: dict[str, ModelType] = {
    # sr_model.py, SRModel: plain training, no clipping (use_grad_clip unread), test() on net_g_ema if any.
    "SRModel": ModelType(_FORK + "sr_model.py SRModel", clip=None),
    # sr_neg_model.py, SRNegModel: one negative, neg_start default 0.999, refreshed when
    # current_iter % neg_iter == 0 with neg_decay; clip_grad_norm_(..., use_grad_clip); test() on the EMA.
    "SRNegModel": ModelType(_FORK + "sr_neg_model.py SRNegModel", "single", 0.999),
    # sr_neg_model.py, SwinIRNegModel(SRNegModel): test() pads to the window (spnir's SwinIR pads itself).
    "SwinIRNegModel": ModelType(_FORK + "sr_neg_model.py SwinIRNegModel", "single", 0.999),
    # sr_neg_multi_model.py, SRNegModel_Multi: len(neg_iter) negatives, neg_start default 0.01, negative
    # idx refreshed every neg_iter[::-1][idx] steps with neg_decay[idx]; test() on the EMA.
    "SRNegModel_Multi": ModelType(_FORK + "sr_neg_multi_model.py SRNegModel_Multi", "multi", 0.01),
    "SwinIRNegModel_Multi": ModelType(_FORK + "sr_neg_multi_model.py SwinIRNegModel_Multi", "multi", 0.01),
    # image_restoration_ffanet_neg_model.py, ImageRestorationModel_FFANet_Neg_Multi(SRNegModel_Multi):
    # feed_data normalises lq with mean (0.64, 0.6, 0.58) / std (0.14, 0.15, 0.152); test() runs net_g.
    "ImageRestorationModel_FFANet_Neg_Multi": ModelType(
        _FORK + "image_restoration_ffanet_neg_model.py ImageRestorationModel_FFANet_Neg_Multi", "multi", 0.01,
        validates_ema=False, ffanet_input=True),
    # image_restoration_ffanet_neg_adaptive_ddp_model.py, ..._Adaptive_DDP: the periodic refresh is commented
    # out; when std(2 * (out - gt)) > neg_t (default 0.022) negative update_neg_count % neg_num is refreshed
    # with decay 0.001; test() runs net_g.
    "ImageRestorationModel_FFANet_Neg_Multi_Adaptive_DDP": ModelType(
        _FORK + "image_restoration_ffanet_neg_adaptive_ddp_model.py "
        "ImageRestorationModel_FFANet_Neg_Multi_Adaptive_DDP", "adaptive", 0.01,
        validates_ema=False, ffanet_input=True),
    # megvii-research/NAFNet basicsr/models/image_restoration_model.py, ImageRestorationModel:
    # use_grad_clip default True, clip_grad_norm_(..., 0.01) for any true value; no EMA; test() runs net_g.
    "ImageRestorationModel": ModelType("megvii-research/NAFNet basicsr/models/image_restoration_model.py "
                                       "ImageRestorationModel", clip="nafnet", ema=False, validates_ema=False),
}
ADAPTIVE_THRESHOLD = 0.022  # the adaptive class's neg_t default
ADAPTIVE_DECAY = 0.001  # the adaptive class's refresh decay (fixed in its code)
NAFNET_CLIP = 0.01  # NAFNet's ImageRestorationModel clips at this norm whenever use_grad_clip is true


def map_basicsr_options(opt: Options, origin: str, notes: list[str]) -> Options:
    """Translate a BasicSR-style option dict into a spnir config dict (validated afterwards)."""
    opt = dict(opt)
    refused: list[str] = []
    kind = _model_type(opt.pop("model_type", None), origin)
    notes.append(f"model_type {kind[0]}: mapped as {kind[1].source} trains")
    config: Options = {"name": opt.pop("name", None), "seed": opt.pop("manual_seed", 0)}
    scale = opt.pop("scale", None)
    num_gpu = opt.get("num_gpu")
    for key, why in _IGNORED_TOP.items():
        if key in opt:
            value = opt.pop(key)
            if key == "complie" and value:
                config.setdefault("train", {})["compile"] = True
            notes.append(f"{key} ignored: {why}")
    config["model"] = _map_network(opt.pop("network_g", None), scale, origin, refused)
    _map_input_normalisation(kind[1], config["model"], notes, refused)
    path_neg = opt.pop("path_neg", None) or {}
    if path_neg.get("pretrain_network_g_neg") is not None:
        refused.append("path_neg.pretrain_network_g_neg (spnir builds the negatives from network_g)")
    if opt.pop("network_g_net", None) is not None:
        refused.append("network_g_net (a negative of another architecture)")
    _map_path(opt.pop("path", None) or {}, config, refused)
    datasets = opt.pop("datasets", None) or {}
    config["data"] = _map_datasets(datasets, num_gpu, notes, refused)
    if config["model"].get("scale") and config["model"]["scale"] > 1:
        config["task"] = "sr"
    train = dict(opt.pop("train", None) or {})
    _map_train(train, kind[1], config, notes, refused)
    _map_val(opt.pop("val", None) or {}, config, refused)
    _map_validated_network(kind[1], config, notes)
    _map_logger(opt.pop("logger", None) or {}, config, notes, refused)
    for key in opt:
        refused.append(f"{key} (unknown top-level option)")
    if refused:
        raise SpnirError(f"{origin}: BasicSR options spnir does not support (they would change the training): "
                         + "; ".join(refused))
    return config


def _model_type(name: Any, origin: str) -> tuple[str, ModelType]:
    """``(name, semantics)`` of the option file's ``model_type``; absent or unknown types are refused."""
    if name in MODEL_TYPES:
        return name, MODEL_TYPES[name]
    known = ", ".join(MODEL_TYPES)
    if name is None:
        raise SpnirError(f"{origin}: model_type is missing; BasicSR needs it and it decides what the options "
                         f"mean (negatives, clipping, the validated network). spnir maps: {known}")
    raise SpnirError(f"{origin}: model_type {name!r} is not one spnir maps (it maps the classes of the SPN "
                     f"authors' fork and NAFNet's trainer: {known}); write a spnir config instead (docs/training.md)")


def _map_input_normalisation(kind: ModelType, model: Options, notes: list[str], refused: list[str]) -> None:
    """FFA-Net's input normalisation: in the fork's FFANet classes' ``feed_data``, in spnir's preset."""
    if model.get("name") != "ffanet":
        if kind.ffanet_input:
            refused.append(f"network_g {model.get('name')} under a model_type that normalises the input with "
                           "FFA-Net's mean/std (spnir does that in the ffanet preset only)")
        return
    if not kind.ffanet_input:
        model.setdefault("args", {})["input_norm"] = False
        notes.append("network_g FFANet -> model.args.input_norm false: this model_type feeds the input "
                     "unnormalised (only the FFANet classes normalise it)")


def _map_validated_network(kind: ModelType, config: Options, notes: list[str]) -> None:
    if config["ema"]["decay"] is not None and not kind.validates_ema:
        config["val"]["use_ema"] = False
        notes.append("val.use_ema false: this model_type validates the trained network, not the EMA copy "
                     "(the EMA is still kept and saved)")


def _map_network(net: Options | None, scale: Any, origin: str, refused: list[str]) -> Options:
    if not net or "type" not in net:
        raise SpnirError(f"{origin}: network_g with a type is required")
    net = dict(net)
    kind = net.pop("type")
    upscale = net.pop("upscale", scale)
    model: Options = {"scale": upscale if upscale not in (None, 1) else None}
    family = _NETWORK_ALIASES.get(kind, kind)
    if family in _NETWORKS:
        key, presets, official = _NETWORKS[family]
        ident = (net.pop(key, None),)
        if ident not in presets:
            refused.append(f"network_g {kind} with {key}={ident[0]} (spnir presets: "
                           + ", ".join(f"{key}={k[0]} -> {v}" for k, v in presets.items()) + ")")
            return {"name": "unknown"}
        model["name"] = presets[ident]
        defaults = {**official, **_PRESET_DEFAULTS.get(presets[ident], {})}
    else:  # a spnir preset name used directly as the type
        model["name"] = kind
        defaults = {}
    args = {k: v for k, v in net.items() if not (k in defaults and _same(defaults[k], v))}
    if args:
        model["args"] = args
    return model


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    try:
        return float(a) == float(b)
    except (TypeError, ValueError):
        return a == b


def _map_path(path: Options, config: Options, refused: list[str]) -> None:
    model = config["model"]
    for key, value in path.items():
        if key == "pretrain_network_g":
            model["pretrained"] = value
        elif key == "strict_load_g":
            model["pretrained_strict"] = bool(value)
        elif key == "param_key_g":
            model["pretrained_key"] = value
        elif key == "resume_state":
            if value:
                refused.append("path.resume_state (use spnir train --resume PATH|auto)")
        elif key.startswith(("experiments_root", "models", "training_states", "log", "visualization", "root")):
            continue
        elif value is not None:
            refused.append(f"path.{key}")


def _map_datasets(datasets: Options, num_gpu: Any, notes: list[str], refused: list[str]) -> Options:
    data: Options = {"val": []}
    for phase, spec in datasets.items():
        spec = dict(spec or {})
        if spec.get("io_backend", {}).get("type", "disk") != "disk":
            refused.append(f"datasets.{phase}.io_backend.type={spec['io_backend']['type']} (spnir reads image folders)")
        if spec.get("filename_tmpl", "{}") != "{}":
            refused.append(f"datasets.{phase}.filename_tmpl={spec['filename_tmpl']!r} (spnir matches names by layout)")
        if spec.get("type", "PairedImageDataset") != "PairedImageDataset":
            refused.append(f"datasets.{phase}.type={spec['type']} (spnir maps PairedImageDataset only)")
        entry: Options = {"type": "paired", "lq": spec.pop("dataroot_lq", None), "gt": spec.pop("dataroot_gt", None)}
        if phase == "train":
            per_gpu = spec.get("batch_size_per_gpu", 1)
            gpus = num_gpu if isinstance(num_gpu, int) and num_gpu > 0 else 1
            if not isinstance(num_gpu, int):
                notes.append(f"num_gpu={num_gpu!r}: data.train.batch_size set to batch_size_per_gpu={per_gpu}; "
                             "spnir's batch size is global, set it for your number of processes")
            entry["batch_size"] = per_gpu * gpus
            for src, dst in (("gt_size", "patch_size"), ("use_hflip", "flip"), ("use_flip", "flip"),
                             ("use_rot", "rot90"), ("dataset_enlarge_ratio", "enlarge")):
                if src in spec:
                    entry[dst] = spec.pop(src)
            if "num_worker_per_gpu" in spec:
                entry["workers"] = spec["num_worker_per_gpu"]
            data["train"] = entry
        elif phase.startswith("val") or phase.startswith("test"):
            entry["name"] = spec.get("name", phase)
            data["val"].append(entry)
        else:
            refused.append(f"datasets.{phase} (expected train, val, val_*)")
            continue
        for key in spec:
            if key not in _IGNORED_DATA:
                refused.append(f"datasets.{phase}.{key}")
    return data


def _map_train(train: Options, kind: ModelType, config: Options, notes: list[str], refused: list[str]) -> None:
    if "pixel_opt" in train:
        pixel = dict(train.pop("pixel_opt") or {})
        loss_type = pixel.pop("type", None)
        if loss_type not in _LOSS_TYPES:
            refused.append(f"train.pixel_opt.type={loss_type} (supported: {', '.join(sorted(_LOSS_TYPES))})")
        loss: Options = {"type": loss_type, "weight": pixel.pop("loss_weight", 1.0)}
        if pixel.pop("reduction", "mean") != "mean":
            refused.append("train.pixel_opt.reduction (spnir trains with mean)")
        if pixel:
            loss["args"] = pixel
        config["loss"] = loss
    perceptual = train.pop("perceptual_opt", None)
    if perceptual and kind.negatives is None:
        refused.append("train.perceptual_opt under a model_type without negatives (a perceptual loss towards GT "
                       "is not part of spnir; the fork's *Neg* model types make it SPN's negative term)")
    elif perceptual:
        config["spn"] = map_negative_loss(dict(perceptual), refused)
    elif kind.negatives is not None:
        notes.append("no train.perceptual_opt: this model_type then computes no negative term; SPN off")
    map_negatives(train, kind, config.get("spn"), notes, refused)
    if not kind.ema:
        if "ema_decay" in train:
            notes.append("train.ema_decay ignored: this model_type keeps no EMA copy")
            train.pop("ema_decay")
        config["ema"] = {"decay": None}
    elif "ema_decay" in train:
        decay = train.pop("ema_decay")
        config["ema"] = {"decay": decay if decay and decay > 0 else None}
    else:
        config["ema"] = {"decay": None}  # BasicSR trains without EMA unless ema_decay is set
    if "optim_g" in train:
        optim = dict(train.pop("optim_g"))
        config["optim"] = {"type": optim.pop("type", "Adam")}
        for key in ("lr", "betas", "weight_decay", "eps"):
            if key in optim:
                config["optim"][key] = optim.pop(key)
        refused.extend(f"train.optim_g.{k}" for k in optim)
    if "scheduler" in train:
        config["scheduler"] = _map_scheduler(dict(train.pop("scheduler")), refused)
    config.setdefault("train", {})
    if "total_iter" in train:
        config["train"]["total_iter"] = train.pop("total_iter")
    warmup = train.pop("warmup_iter", -1)
    if warmup is not None and warmup > 0:
        config.setdefault("scheduler", {})["warmup"] = warmup
    _map_grad_clip(train, kind, config, notes)
    if "use_grad_norm" in train:
        notes.append("train.use_grad_norm ignored: the official code never reads it (its clipping key is "
                     "use_grad_clip)")
        train.pop("use_grad_norm")
    refused.extend(f"train.{k}" for k in train)


_NEG_KEYS = ("neg_iter", "neg_decay", "neg_start", "neg_t", "update_scaling")


def map_negatives(train: Options, kind: ModelType, spn: Options | None, notes: list[str],
                  refused: list[str]) -> None:
    """``neg_*`` -> the schedule of ``spn`` (None: SPN off), as the model type's class reads them."""
    if kind.negatives is None or spn is None:
        for key in _NEG_KEYS:
            if key in train:
                train.pop(key)
                why = "this model_type has no negatives" if kind.negatives is None else "SPN is off"
                notes.append(f"train.{key} ignored: {why}")
        return
    iters, decays = train.pop("neg_iter", None), train.pop("neg_decay", None)
    if kind.negatives == "single":
        if not isinstance(iters, int) or isinstance(iters, bool) or iters <= 0:
            refused.append(f"train.neg_iter={iters!r} (this model_type refreshes its one negative every "
                           "neg_iter iterations: a positive integer)")
            return
        decay = 0.0 if decays is None else decays
        spn["periods"], spn["decays"] = [iters], [decay]
        notes.append(f"train.neg_iter/neg_decay -> spn.periods [{iters}], spn.decays [{decay}]"
                     + (" (neg_decay absent: the class's default 0, a copy of the target)" if decays is None else ""))
    else:
        if not isinstance(iters, list) or not iters:
            refused.append(f"train.neg_iter={iters!r} (this model_type needs a list: one entry per negative)")
            return
        if kind.negatives == "adaptive":
            spn["periods"] = [0] * len(iters)
            spn["decays"] = [ADAPTIVE_DECAY] * len(iters)
            given = "neg_t" in train
            spn["adaptive_threshold"] = train.pop("neg_t", ADAPTIVE_THRESHOLD)
            spn["adaptive_decay"] = ADAPTIVE_DECAY
            notes.append(f"train.neg_iter -> {len(iters)} negatives, spn.periods {spn['periods']}: this model_type "
                         "refreshes adaptively only (its periodic refresh is commented out); neg_decay has no effect")
            notes.append(f"train.neg_t -> spn.adaptive_threshold {spn['adaptive_threshold']}"
                         + ("" if given else " (absent: the class's default)")
                         + f", spn.adaptive_decay {ADAPTIVE_DECAY} (fixed in the class)")
        else:
            if not isinstance(decays, list) or len(decays) != len(iters):
                refused.append(f"train.neg_decay={decays!r} (this model_type needs one decay per neg_iter entry)")
                return
            # the class refreshes negative k every neg_iter[::-1][k] steps with neg_decay[k]
            spn["periods"], spn["decays"] = list(reversed(iters)), list(decays)
            notes.append(f"train.neg_iter/neg_decay -> spn.periods {spn['periods']}, spn.decays {spn['decays']}: "
                         "neg_iter paired with neg_decay in reverse order, as the class does")
    if "neg_start" in train:
        spn["init_decay"] = train.pop("neg_start")
        notes.append(f"train.neg_start -> spn.init_decay {spn['init_decay']}")
    else:
        spn["init_decay"] = kind.neg_start
        notes.append(f"train.neg_start absent -> spn.init_decay {kind.neg_start} (the class's default)")
    if "neg_t" in train:
        train.pop("neg_t")
        notes.append("train.neg_t ignored: this model_type refreshes periodically only")
    if "update_scaling" in train:
        train.pop("update_scaling")
        notes.append("train.update_scaling ignored: the fork reads it but never uses it")


def _map_grad_clip(train: Options, kind: ModelType, config: Options, notes: list[str]) -> None:
    """``use_grad_clip`` as the class reads it (absent, false, true, or a number)."""
    present = "use_grad_clip" in train
    value = train.pop("use_grad_clip", None)
    if kind.clip is None:
        if value:
            notes.append("train.use_grad_clip ignored: this model_type never clips")
        return
    if kind.clip == "nafnet":
        if value or not present:
            config["train"]["grad_clip"] = NAFNET_CLIP
            notes.append(f"train.use_grad_clip {'absent (default true)' if not present else value!r} -> "
                         f"train.grad_clip {NAFNET_CLIP}, as NAFNet's ImageRestorationModel clips for any true value")
        return
    if value:
        config["train"]["grad_clip"] = float(value)  # passed to clip_grad_norm_ as max_norm: true -> 1.0
        notes.append(f"train.use_grad_clip {value!r} -> train.grad_clip {float(value)} (the class passes the "
                     "value as the max norm)")


def map_negative_loss(perceptual: Options, refused: list[str]) -> Options:
    """``train.perceptual_opt`` (the fork's negative term) -> spnir's ``spn`` section (keys it cannot honour
    refused)."""
    spn: Options = {"enabled": True}
    perceptual.pop("type", None)
    if "layer_weights" in perceptual:
        spn["layer_weights"] = perceptual.pop("layer_weights")
    spn["features"] = perceptual.pop("vgg_type", "vgg19")
    spn["input_norm"] = perceptual.pop("use_input_norm", True)
    spn["range_norm"] = perceptual.pop("range_norm", False)
    spn["weight"] = perceptual.pop("perceptual_weight", 1.0)
    if perceptual.pop("style_weight", 0) not in (0, 0.0, None):
        refused.append("train.perceptual_opt.style_weight (SPN uses the feature distance only)")
    if perceptual.pop("criterion", "l1") != "l1":
        refused.append("train.perceptual_opt.criterion (SPN's distance is L1)")
    refused.extend(f"train.perceptual_opt.{k}" for k in perceptual)
    return spn


def _map_scheduler(sched: Options, refused: list[str]) -> Options:
    kind = sched.pop("type", None)
    out: Options = {}
    if kind in ("MultiStepLR", "MultiStepRestartLR"):
        out = {"type": "multistep", "milestones": sched.pop("milestones", []), "gamma": sched.pop("gamma", 0.1)}
        restarts, restart_weights = sched.pop("restarts", [0]), sched.pop("restart_weights", [1])
        if restarts not in ([0], [], None) or restart_weights not in ([1], [], None):
            refused.append("train.scheduler.restarts/restart_weights of MultiStepRestartLR")
    elif kind == "CosineAnnealingRestartLR":
        out = {"type": "cosine_restarts", "periods": sched.pop("periods", []),
               "restart_weights": sched.pop("restart_weights", []), "eta_min": sched.pop("eta_min", 0.0)}
    elif kind in ("TrueCosineAnnealingLR", "CosineAnnealingLR"):
        out = {"type": "cosine", "t_max": sched.pop("T_max", None), "eta_min": sched.pop("eta_min", 0.0)}
    elif kind == "LinearLR":
        out = {"type": "linear"}
    else:
        refused.append(f"train.scheduler.type={kind} (supported: {', '.join(sorted(_SCHEDULERS))})")
    refused.extend(f"train.scheduler.{k}" for k in sched)
    return out


def _map_val(val: Options, config: Options, refused: list[str]) -> None:
    out: Options = {}
    if "val_freq" in val:
        out["every"] = val.pop("val_freq")
    val.pop("save_img", None)
    val.pop("pbar", None)
    metrics = val.pop("metrics", None) or {}
    names, borders, y_flags = [], set(), set()
    for label, spec in metrics.items():
        kind = (spec or {}).get("type")
        if kind not in ("calculate_psnr", "calculate_ssim"):
            refused.append(f"val.metrics.{label}.type={kind} (spnir computes calculate_psnr, calculate_ssim)")
            continue
        names.append("psnr" if kind == "calculate_psnr" else "ssim")
        borders.add(spec.get("crop_border", 0))
        y_flags.add(bool(spec.get("test_y_channel", False)))
    if len(borders) > 1 or len(y_flags) > 1:
        refused.append("val.metrics with different crop_border/test_y_channel per metric")
    if names:
        out.update(metrics=names, crop_border=borders.pop(), y_channel=y_flags.pop())
    refused.extend(f"val.{k}" for k in val)
    config["val"] = out


def _map_logger(logger: Options, config: Options, notes: list[str], refused: list[str]) -> None:
    if "print_freq" in logger:
        config["log"] = {"every": logger.pop("print_freq")}
    if "save_checkpoint_freq" in logger:
        config["checkpoint"] = {"every": logger.pop("save_checkpoint_freq")}
    if "use_tb_logger" in logger:
        config.setdefault("log", {})["tensorboard"] = bool(logger.pop("use_tb_logger"))
    wandb = logger.pop("wandb", None) or {}
    if wandb.get("project"):
        config.setdefault("log", {})["wandb"] = {"project": wandb["project"], "id": wandb.get("resume_id")}
        notes.append("logger.wandb: log.wandb, W&B syncing the TensorBoard events offline (log.wandb.mode: online "
                     "uploads while training, as BasicSR does)")
    refused.extend(f"logger.{k}" for k in logger)
