"""The training config's schema: every key with its type, default, choices and meaning, and the check of a raw
config against it (types converted by :mod:`spnir.coerce`, unknown keys named with their near match).

Vocabularies come from the modules that own them (losses, schedules, negative sources, forms, layouts, VGG kinds,
dtypes); a rule a constructor enforces is checked by that constructor's own validator (:mod:`.rules`), not here.
"""
from __future__ import annotations

import copy
import difflib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from spnir.allocator import CHOICES as ALLOCATOR_CHOICES
from spnir.coerce import conform, describe_type
from spnir.data.builtin import SPLITS
from spnir.data.paired import LAYOUTS
from spnir.device import AUTOCAST_DTYPES, DTYPE_SPELLINGS
from spnir.errors import Param, SpnirError, in_current_words, shown
from spnir.evaluation import TASKS
from spnir.features import VGG_KINDS
from spnir.losses import ALIASES as LOSS_ALIASES
from spnir.losses import LOSSES
from spnir.metrics import CONVENTIONS
from spnir.negative_sources import SOURCES
from spnir.spn import FORMS
from spnir.train.optim import OPTIMIZERS, SCHEDULERS

Config = dict[str, Any]
_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One config value: its type (a hint :func:`spnir.coerce.conform` reads: ``int``, ``float``, ``bool``,
    ``str``, ``dict``, ``list[int]``, ``dict[str, float]``, ``Any``, or ``list[dict]`` whose entries are checked
    against ``item``), default, meaning and constraint. ``spellings`` maps a refused spelling to the right one."""

    kind: Any
    default: Any = _REQUIRED
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    expect: str = ""  # words for what ``check`` accepts, e.g. "> 0"
    nullable: bool = False
    item: dict[str, Any] | None = None  # schema of each entry of a ``list[dict]``
    spellings: Mapping[str, str] | None = None


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


NAME_CHARS = 100  # names that become folders (the run's, a validation set's)


def _folder_name(v: str) -> bool:
    return 0 < len(v) <= NAME_CHARS and v not in (".", "..") and v.isprintable() and not any(c in v for c in "/\\")


_NAME_RULE = f"a folder name: at most {NAME_CHARS} printable characters, no / or \\, not . or .."


def _pos(default: Any, doc: str, nullable: bool = False, kind: Any = int) -> Field:
    return Field(kind, default, doc, check=_positive, expect="> 0", nullable=nullable)


def _nonneg(default: Any, doc: str, kind: Any = int, nullable: bool = False) -> Field:
    return Field(kind, default, doc, check=_non_negative, expect=">= 0", nullable=nullable)


_DATA_SOURCE: dict[str, Any] = {
    "type": Field(str, "paired", "paired (LQ/GT folders), clean (GT folder + degradations), builtin "
                  "(the embedded scikit-image photographs + degradations)", choices=("paired", "clean", "builtin")),
    "lq": Field(str, None, "LQ folder (paired); ${VAR} expands from the environment", nullable=True),
    "gt": Field(str, None, "GT folder (paired, clean); ${VAR} expands from the environment", nullable=True),
    "layout": Field(str, "auto", f"paired layout: auto, {', '.join(LAYOUTS)}",
                    choices=("auto", *LAYOUTS)),
    "pairs": Field(str, None, "CSV pair list for layout csv", nullable=True),
    "split": Field(str, "train", "builtin split", choices=tuple(SPLITS)),
    "extra_gt": Field(Any, [], "clean/builtin sets: more clean images merged with this entry's: folders "
                      "(${VAR} expands) or builtin:train / builtin:val (the embedded photographs)",
                      check=lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                      expect="a list of folder names"),
    "channels": Field(int, 3, "3: RGB; 1: grayscale (gray files as they are, colour through MATLAB rgb2gray), "
                      "for 1-channel models such as DnCNN", choices=(1, 3)),
    "degradations": Field(Any, [], "clean/builtin sets: a task preset name (sr, dehaze, derain, deblur, "
                          "denoise, jpeg) or a list of steps {type: bicubic|haze|rain|blur|noise|jpeg|quantize, "
                          "...} applied in order (spnir.data.degrade)"),
}

_VAL_SET: dict[str, Any] = {
    "name": Field(str, _REQUIRED, "name of the set in logs, tables and images/<iteration>/<name>",
                  check=_folder_name, expect=_NAME_RULE),
    **_DATA_SOURCE,
    "split": Field(str, "val", "builtin split", choices=tuple(SPLITS)),
    "max_images": _pos(None, "evaluate only the first N images", nullable=True),
}

SCHEMA: dict[str, Any] = {
    "name": Field(str, None, "run name, the default run folder runs/<name> (default: the config file's name)",
                  nullable=True, check=_folder_name, expect=_NAME_RULE),
    "task": Field(str, "other", "what the run restores (informational)",
                  choices=(*TASKS, "other")),
    "seed": _nonneg(0, "seed of model init, negatives' fresh init and data sampling"),
    "model": {
        "name": Field(str, _REQUIRED, "architecture preset (spnir.archs.list_models()) or 'module:callable'"),
        "scale": _pos(None, "upscaling factor (SR presets)", nullable=True),
        "args": Field(dict, {}, "keyword overrides of the preset"),
        "pretrained": Field(str, None, "initial weights file (${VAR} expands)", nullable=True),
        "pretrained_key": Field(str, None, "key inside the file (params, params_ema, ...)", nullable=True),
        "pretrained_strict": Field(bool, True, "all keys must match"),
    },
    "data": {
        "train": {
            **_DATA_SOURCE,
            "patch_size": _pos(_REQUIRED, "GT patch size (LQ patch = patch_size / scale)"),
            "batch_size": _pos(_REQUIRED, "global batch size (split evenly over DDP ranks)"),
            "flip": Field(bool, True, "random horizontal flips"),
            "rot90": Field(bool, True, "random vertical flips and 90-degree rotations"),
            "enlarge": _pos(1, "repeat the image list this many times per epoch (BasicSR dataset_enlarge_ratio)"),
            "cache": Field(bool, False, "keep decoded images in memory"),
            "workers": _nonneg(4, "data loader worker processes per rank"),
        },
        "val": Field(list[dict], [], "validation sets", item=_VAL_SET),
        "verify": Field(bool, False, "decode every training and validation image before the first step (finds "
                        "truncated files, which headers alone do not show; costs one read of the data)"),
    },
    "loss": {
        "type": Field(str, "L1Loss", f"reconstruction loss: {', '.join(LOSSES)} (or {', '.join(LOSS_ALIASES)})"),
        "weight": _pos(1.0, "loss_weight", kind=float),
        "args": Field(dict, {}, "extra arguments of the loss (eps, to_y, ...)"),
    },
    "spn": {
        "enabled": Field(bool, False, "add the SPN negative term"),
        "weight": Field(Any, 0.001, "weight of the negative term (a number >= 0, or 'auto')"),
        "target_ratio": Field(float, 0.05, "weight 'auto': negative term / reconstruction loss"),
        "features": Field(str, "vgg16", "feature extractor", choices=VGG_KINDS),
        "vgg_weights": Field(str, "imagenet", "the VGG feature space: imagenet (torchvision's cached file), "
                             "imagenet-caffe (Oxford's VGG16, Caffe input convention), a file path (caffe:PATH states "
                             "its convention), or random (seeded random VGG: not the method's feature space)"),
        "layer_weights": Field(dict[str, float], {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5},
                               "VGG layer -> weight"),
        "input_norm": Field(bool, True, "transform the VGG input as its weights expect (torchvision's "
                            "normalisation or Caffe's x255/BGR/mean)"),
        "feature_dtype": Field(str, "float32", "precision of the negatives' forward and VGG: float32, or "
                               "bf16/fp16 autocast (about 2x faster VGG on CPUs with AVX512-BF16)",
                               choices=("float32", *AUTOCAST_DTYPES), spellings=DTYPE_SPELLINGS),
        "range_norm": Field(bool, False, "map [-1, 1] inputs to [0, 1] before VGG"),
        "periods": Field(list[int], [100, 200, 500, 1000], "refresh period of each negative (iterations)"),
        "decays": Field(list[float], [0.1, 0.1, 0.1, 0.1], "refresh EMA decay of each negative"),
        "init_decay": Field(float, 0.1, "weight of a fresh init in each negative at creation (neg_start)"),
        "adaptive_threshold": _pos(None, "refresh one negative when the residual std exceeds this",
                                   nullable=True, kind=float),
        "adaptive_decay": Field(float, 0.001, "decay of the adaptive refresh"),
        "max_distance": Field(float, None, "bounded variant: hinge the feature distance at this value",
                              nullable=True),
        "source": Field(str, "history", "where the negatives come from: history (SPN's negative models), "
                        "input (the degraded input, bicubic-upsampled for SR), frozen (outputs of frozen models), "
                        "degraded-gt (the GT through spn.degradations)",
                        choices=tuple(SOURCES)),
        "form": Field(str, "difference", "difference (SPN: -weight * distance to the negatives) or ratio "
                      "(CR of AECR-Net: weight * D(out, gt) / D(out, negatives))", choices=FORMS),
        "uncertainty_weight": Field(float, 0.0, "weight of the uncertainty-weighted L1 term (per-pixel spread of "
                                    "the negatives and the output; 0: off)"),
        "frozen": Field(Any, [], "source frozen: spnir model checkpoint files of the frozen models"),
        "degradations": Field(Any, [], "source degraded-gt: degradation steps applied to the GT (spnir.data.degrade)"),
        "count": Field(int, 1, "source degraded-gt: negatives per batch"),
    },
    "ema": {
        "decay": Field(float, 0.999, "decay of the evaluation EMA model (null: no EMA)", nullable=True),
    },
    "optim": {
        "type": Field(str, "Adam", "optimiser", choices=tuple(OPTIMIZERS)),
        "lr": _pos(_REQUIRED, "learning rate", kind=float),
        "betas": Field(list[float], [0.9, 0.99], "Adam betas",
                       check=lambda b: len(b) == 2 and all(0 <= x < 1 for x in b),
                       expect="two numbers in [0, 1)"),
        "weight_decay": _nonneg(0.0, "weight decay", kind=float),
        "eps": _pos(1e-8, "Adam epsilon", kind=float),
        "fused": Field(bool, None, "fused Adam/AdamW kernels (CPU and CUDA; null: PyTorch's default)",
                       nullable=True),
        "foreach": Field(bool, None, "multi-tensor (foreach) Adam/AdamW (null: PyTorch's default)", nullable=True),
    },
    "scheduler": {
        "type": Field(str, "constant", "learning-rate schedule", choices=tuple(SCHEDULERS)),
        "unit": Field(str, "iter", "unit of milestones / periods / warmup: iter, or epoch (the lr then "
                      "changes once per epoch, as epoch-based official trainings do)", choices=("iter", "epoch")),
        "milestones": Field(list[int], [], "multistep: where the lr is multiplied by gamma"),
        "gamma": _pos(0.5, "multistep factor", kind=float),
        "t_max": _pos(None, "cosine: half period (default: the whole run)", nullable=True),
        "eta_min": _nonneg(0.0, "cosine: lowest lr", kind=float),
        "periods": Field(list[int], [], "cosine_restarts: length of each cycle"),
        "restart_weights": Field(list[float], [], "cosine_restarts: lr factor at the start of each cycle "
                                 "(default all 1)"),
        "warmup": _nonneg(0, "linear warmup length (from 0 to the lr)"),
    },
    "train": {
        "total_iter": _pos(None, "iterations to train (or set epochs)", nullable=True),
        "epochs": _pos(None, "epochs to train (converted to iterations from the dataset size)", nullable=True),
        "grad_clip": _pos(None, "clip the gradient norm to this", nullable=True, kind=float),
        "amp": Field(str, "none", "mixed precision: none, bf16, fp16 (with a GradScaler; CPU and GPU)",
                     choices=("none", *AUTOCAST_DTYPES), spellings=DTYPE_SPELLINGS),
        "accumulate": _pos(1, "gradient accumulation: one optimiser step per K micro-batches of "
                           "data.train.batch_size (K times the samples per step)"),
        "channels_last": Field(Any, "auto", "channels_last memory format for the model, negatives, feature "
                               "extractor and inputs; auto: on for CUDA, off for CPU",
                               check=lambda v: v in ("auto", True, False), expect="true, false or auto"),
        "compile": Field(bool, False, "torch.compile the model's training forward"),
        "tf32": Field(bool, None, "CUDA: TF32 matmuls and convolutions (true) or full fp32 (false); null: "
                      "PyTorch's defaults; no effect on the CPU", nullable=True),
        "cudnn_benchmark": Field(bool, False, "CUDA: let cuDNN time its algorithms for each input shape; no "
                                 "effect on the CPU"),
        "device": Field(str, "auto", "auto (cuda when available), cpu, cuda", choices=("auto", "cpu", "cuda")),
        "cpu_allocator": Field(str, "keep", "keep: freed CPU memory stays in the process for the next step "
                               "(glibc; no page faults per step); system: leave malloc as it is",
                               choices=ALLOCATOR_CHOICES),
    },
    "val": {
        "every": _pos(5000, "validate every N iterations (and at the end)"),
        "metrics": Field(Any, ["psnr", "ssim"], "subset of [psnr, ssim, lpips, dists] (lpips, dists: lower is "
                         "better, on RGB; they need `spnir weights lpips-vgg` / `spnir weights dists`)"),
        "vgg_weights": Field(str, "imagenet", "VGG16 of lpips/dists: imagenet (cached torchvision file), a file "
                             "path, or random (seeded; not the metrics' values)"),
        "crop_border": _nonneg(0, "pixels cropped at each border before the metrics"),
        "y_channel": Field(bool, False, "metrics on the Y channel"),
        "convention": Field(str, "basicsr", "metric convention", choices=CONVENTIONS),
        "use_ema": Field(bool, True, "validate the EMA model when there is one"),
        "on_error": Field(str, "skip", "a validation image that fails its check at the start is left out with "
                          "its reason in the log (skip, as spnir eval does) or stops the run (stop)",
                          choices=("skip", "stop")),
        "tile": Field(int, None, "restore in tiles of this many LQ pixels (spnir restore's tiler); null: whole "
                      "images", nullable=True),
        "tile_overlap": Field(int, 32, "overlap of neighbouring tiles in LQ pixels (< val.tile)"),
        "amp": Field(str, "none", "inference precision of validation: none, bf16, fp16",
                     choices=("none", *AUTOCAST_DTYPES), spellings=DTYPE_SPELLINGS),
        "save_images": _nonneg(0, "write the first N restored images of each set at each validation to "
                               "<run>/images and TensorBoard"),
    },
    "checkpoint": {
        "every": _pos(5000, "write a resumable checkpoint every N iterations"),
        "keep": _pos(3, "keep the newest K checkpoints"),
    },
    "log": {
        "every": _pos(100, "log losses every N iterations"),
        "tensorboard": Field(bool, True, "write TensorBoard events"),
        "progress": Field(bool, True, "a progress bar on an interactive terminal (false, or output that is not "
                          "a terminal: a plain status line every --status-every seconds)"),
        "wandb": {
            "project": Field(str, None, "Weights & Biases project; W&B syncs the run's TensorBoard events "
                             "(needs log.tensorboard and pip install 'spnir[wandb]'); null: no W&B", nullable=True),
            "name": Field(str, None, "W&B run name (default: the run's name)", nullable=True),
            "mode": Field(str, "offline", "offline: W&B's files in <run>/wandb, uploaded later by `wandb sync`; "
                          "online: uploaded while training (needs `wandb login`)", choices=("offline", "online")),
            "id": Field(str, None, "W&B run id (default: a new one at a fresh start, kept in <run>/wandb and "
                        "continued by a resume)", nullable=True),
        },
    },
}

@dataclass(frozen=True)
class Origin:
    """Where a config's values came from, for messages: its file, or the override that gave a key its value."""

    source: str = "config"
    overrides: tuple[tuple[str, Param], ...] = ()  # (dotted key, the override that set it) in the order applied

    def at(self, *keys: str) -> str:
        """The last override that set one of ``keys`` (or a section holding it), as the running command words
        it (``--set k=v``; see :func:`spnir.errors.in_current_words`), else the file."""
        for set_key, item in reversed(self.overrides):
            if any(k == set_key or k.startswith((set_key + ".", set_key + "[")) for k in keys):
                return in_current_words(item)
        return self.source


def check_schema(raw: Any, origin: Origin) -> Config:
    """``raw`` checked against :data:`SCHEMA`: a new config with types converted and defaults filled in."""
    return _check_section(raw, SCHEMA, "", origin)


def _check_section(raw: Any, schema: dict[str, Any], prefix: str, origin: Origin) -> Config:
    if raw is None:
        raw = {}
    section = prefix.rstrip(".")
    if not isinstance(raw, dict):
        raise SpnirError(f"{origin.at(section)}: {section or 'the config'} must be a mapping of settings, "
                         f"got {shown(raw)}")
    for key in raw:
        dotted = prefix + str(key)
        if key not in schema:
            near = difflib.get_close_matches(str(key), list(schema), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(prefix + n for n in near)}?" if near else ""
            raise SpnirError(f"{origin.at(dotted)}: unknown key {shown(dotted)}{hint} "
                             f"(known here: {', '.join(schema)})")
    out: Config = {}
    for key, spec in schema.items():
        name = prefix + key
        if isinstance(spec, dict):
            out[key] = _check_section(raw.get(key), spec, name + ".", origin)
            continue
        if key not in raw:
            if spec.default is _REQUIRED:
                raise SpnirError(f"{origin.at(section)}: missing required key {name!r} ({spec.doc})")
            out[key] = copy.deepcopy(spec.default)
            continue
        out[key] = _check_value(raw[key], spec, name, origin)
    return out


def _check_value(value: Any, spec: Field, name: str, origin: Origin) -> Any:
    if value is None:
        if spec.nullable or spec.default is None:
            return None
        raise SpnirError(f"{origin.at(name)}: {name} must not be empty; expected {_describe(spec)}")
    if spec.kind == list[dict]:
        if not isinstance(value, list):
            raise SpnirError(f"{origin.at(name)}: {name} = {shown(value)} ({type(value).__name__}): expected "
                             f"{_describe(spec)}")
        return [_check_section(entry, spec.item or {}, f"{name}[{i}].", origin) for i, entry in enumerate(value)]
    ok, value = conform(value, spec.kind)
    if not ok:
        raise SpnirError(f"{origin.at(name)}: {name} = {shown(value)} ({type(value).__name__}): expected "
                         f"{_describe(spec)}")
    if spec.spellings and value in spec.spellings:
        raise SpnirError(f"{origin.at(name)}: {name} = {shown(value)}: write {spec.spellings[value]} (dtypes are "
                         "spelled bf16, fp16, float32)")
    if spec.choices is not None and value not in spec.choices:
        lowered = {str(c).lower(): c for c in spec.choices}
        if str(value).lower() in lowered:
            value = lowered[str(value).lower()]
        else:
            near = difflib.get_close_matches(str(value), [str(c) for c in spec.choices], n=1)
            hint = f" (did you mean {near[0]!r}?)" if near else ""
            raise SpnirError(f"{origin.at(name)}: {name} = {shown(value)} is not one of {list(spec.choices)}{hint}")
    if spec.check is not None and not spec.check(value):
        raise SpnirError(f"{origin.at(name)}: {name} = {shown(value)}: expected {_describe(spec)}")
    return value


def _describe(spec: Field) -> str:
    if spec.choices:
        return f"one of {list(spec.choices)}"
    text = describe_type(spec.kind)
    if spec.expect:
        text += f" {spec.expect}" if spec.kind in (int, float) else f" ({spec.expect})"
    return text
