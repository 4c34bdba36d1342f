"""Training configuration: the schema with its defaults, validation, ``--set`` overrides, ``${VAR}`` paths.

A config is a nested dict (YAML on disk). :func:`load_config` reads a file (spnir's own format or a
BasicSR-style option file, see :mod:`spnir.train.basicsr`), applies ``--set key=value`` overrides and
returns the validated config with every default filled in. Validation runs before any work starts:
an unknown key names its near match, a wrong type or range says what was expected.

Dataset paths may use ``${VAR}`` environment variables; they are expanded (and checked) only when the
datasets are built, so a config validates on a machine without the data.
"""
from __future__ import annotations

import copy
import difflib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from spnir.errors import SHOWN_CHARS, SpnirError, shown
from spnir.yamlfile import parse_yaml, read_yaml

Config = dict[str, Any]
_REQUIRED = object()


@dataclass(frozen=True)
class Field:
    """One config value: its kind, default and constraint.

    ``kind``: ``int``, ``float``, ``bool``, ``str``, ``dict`` (free-form mapping), ``int_list``,
    ``float_list``, ``float_map`` (name -> number), ``items`` (list of dicts checked against ``item``),
    ``any``.
    """

    kind: str
    default: Any = _REQUIRED
    doc: str = ""
    choices: tuple[Any, ...] | None = None
    check: Callable[[Any], bool] | None = None
    expect: str = ""  # words for what ``check`` accepts, e.g. "> 0"
    nullable: bool = False
    item: dict[str, Any] | None = None  # schema of each entry of an ``items`` list


def _positive(v: Any) -> bool:
    return v > 0


def _non_negative(v: Any) -> bool:
    return v >= 0


def _unit(v: Any) -> bool:
    return 0.0 <= v <= 1.0


def _decay(v: Any) -> bool:
    return 0.0 <= v < 1.0


NAME_CHARS = 100  # names that become folders (the run's, a validation set's)


def _folder_name(v: str) -> bool:
    return 0 < len(v) <= NAME_CHARS and v not in (".", "..") and v.isprintable() and not any(c in v for c in "/\\")


_NAME_RULE = f"a folder name: at most {NAME_CHARS} printable characters, no / or \\, not . or .."


def _pos(default: Any, doc: str, nullable: bool = False, kind: str = "int") -> Field:
    return Field(kind, default, doc, check=_positive, expect="> 0", nullable=nullable)


def _nonneg(default: Any, doc: str, kind: str = "int", nullable: bool = False) -> Field:
    return Field(kind, default, doc, check=_non_negative, expect=">= 0", nullable=nullable)


# One dataset (training or validation): where its images come from.
_DATA_SOURCE: dict[str, Any] = {
    "type": Field("str", "paired", "paired (LQ/GT folders), clean (GT folder + degradations), builtin "
                  "(the embedded scikit-image photographs + degradations)", choices=("paired", "clean", "builtin")),
    "lq": Field("str", None, "LQ folder (paired); ${VAR} expands from the environment", nullable=True),
    "gt": Field("str", None, "GT folder (paired, clean); ${VAR} expands from the environment", nullable=True),
    "layout": Field("str", "auto", "paired layout: auto, sr, reside, rain100, ddn, gopro, csv",
                    choices=("auto", "sr", "reside", "rain100", "ddn", "gopro", "csv")),
    "pairs": Field("str", None, "CSV pair list for layout csv", nullable=True),
    "split": Field("str", "train", "builtin split", choices=("train", "val")),
    "extra_gt": Field("any", [], "clean/builtin sets: more clean images merged with this entry's: folders "
                      "(${VAR} expands) or builtin:train / builtin:val (the embedded photographs)",
                      check=lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v),
                      expect="a list of folder names"),
    "channels": Field("int", 3, "3: RGB; 1: grayscale (gray files as they are, colour through MATLAB rgb2gray), "
                      "for 1-channel models such as DnCNN", choices=(1, 3)),
    "degradations": Field("any", [], "clean/builtin sets: a task preset name (sr, dehaze, derain, deblur, "
                          "denoise, jpeg) or a list of steps {type: bicubic|haze|rain|blur|noise|jpeg|quantize, "
                          "...} applied in order (spnir.data.degrade)"),
}

_VAL_SET: dict[str, Any] = {
    "name": Field("str", _REQUIRED, "name of the set in logs, tables and images/<iteration>/<name>",
                  check=_folder_name, expect=_NAME_RULE),
    **_DATA_SOURCE,
    "split": Field("str", "val", "builtin split", choices=("train", "val")),
    "max_images": _pos(None, "evaluate only the first N images", nullable=True),
}

SCHEMA: dict[str, Any] = {
    "name": Field("str", None, "run name, the default run folder runs/<name> (default: the config file's name)",
                  nullable=True, check=_folder_name, expect=_NAME_RULE),
    "task": Field("str", "other", "what the run restores (informational)",
                  choices=("sr", "dehaze", "derain", "deblur", "denoise", "other")),
    "seed": _nonneg(0, "seed of model init, negatives' fresh init and data sampling"),
    "model": {
        "name": Field("str", _REQUIRED, "architecture preset (spnir.archs.list_models()) or 'module:callable'"),
        "scale": _pos(None, "upscaling factor (SR presets)", nullable=True),
        "args": Field("dict", {}, "keyword overrides of the preset"),
        "pretrained": Field("str", None, "initial weights file (${VAR} expands)", nullable=True),
        "pretrained_key": Field("str", None, "key inside the file (params, params_ema, ...)", nullable=True),
        "pretrained_strict": Field("bool", True, "all keys must match"),
    },
    "data": {
        "train": {
            **_DATA_SOURCE,
            "patch_size": _pos(_REQUIRED, "GT patch size (LQ patch = patch_size / scale)"),
            "batch_size": _pos(_REQUIRED, "global batch size (split evenly over DDP ranks)"),
            "flip": Field("bool", True, "random horizontal flips"),
            "rot90": Field("bool", True, "random vertical flips and 90-degree rotations"),
            "enlarge": _pos(1, "repeat the image list this many times per epoch (BasicSR dataset_enlarge_ratio)"),
            "cache": Field("bool", False, "keep decoded images in memory"),
            "workers": _nonneg(4, "data loader worker processes per rank"),
        },
        "val": Field("items", [], "validation sets", item=_VAL_SET),
        "verify": Field("bool", False, "decode every training and validation image before the first step (finds "
                        "truncated files, which headers alone do not show; costs one read of the data)"),
    },
    "loss": {
        "type": Field("str", "L1Loss", "reconstruction loss: L1Loss, MSELoss, CharbonnierLoss, PSNRLoss "
                      "(or l1, mse, charbonnier, psnr)"),
        "weight": _pos(1.0, "loss_weight", kind="float"),
        "args": Field("dict", {}, "extra arguments of the loss (eps, to_y, ...)"),
    },
    "spn": {
        "enabled": Field("bool", False, "add the SPN negative term"),
        "weight": Field("any", 0.001, "weight of the negative term (a number >= 0, or 'auto')"),
        "target_ratio": _pos(0.05, "weight 'auto': negative term / reconstruction loss", kind="float"),
        "features": Field("str", "vgg16", "feature extractor", choices=("vgg16", "vgg19")),
        "vgg_weights": Field("str", "imagenet", "the VGG feature space: imagenet (torchvision's cached file), "
                             "imagenet-caffe (Oxford's VGG16, Caffe input convention), a file path (caffe:PATH states "
                             "its convention), or random (seeded random VGG: not the method's feature space)"),
        "layer_weights": Field("float_map", {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5},
                               "VGG layer -> weight"),
        "input_norm": Field("bool", True, "transform the VGG input as its weights expect (torchvision's "
                            "normalisation or Caffe's x255/BGR/mean)"),
        "feature_dtype": Field("str", "float32", "precision of the negatives' forward and VGG: float32, or "
                               "bfloat16/float16 autocast (about 2x faster VGG on CPUs with AVX512-BF16)",
                               choices=("float32", "bfloat16", "float16")),
        "range_norm": Field("bool", False, "map [-1, 1] inputs to [0, 1] before VGG"),
        "periods": Field("int_list", [100, 200, 500, 1000], "refresh period of each negative (iterations)"),
        "decays": Field("float_list", [0.1, 0.1, 0.1, 0.1], "refresh EMA decay of each negative"),
        "init_decay": Field("float", 0.1, "weight of a fresh init in each negative at creation (neg_start)",
                            check=_unit, expect="in [0, 1]"),
        "adaptive_threshold": _pos(None, "refresh one negative when the residual std exceeds this",
                                   nullable=True, kind="float"),
        "adaptive_decay": Field("float", 0.001, "decay of the adaptive refresh", check=_unit, expect="in [0, 1]"),
        "max_distance": _pos(None, "bounded variant: hinge the feature distance at this value",
                             nullable=True, kind="float"),
        "source": Field("str", "history", "where the negatives come from: history (SPN's negative models), "
                        "input (the degraded input, bicubic-upsampled for SR), frozen (outputs of frozen models), "
                        "degraded-gt (the GT through spn.degradations)",
                        choices=("history", "input", "frozen", "degraded-gt")),
        "form": Field("str", "difference", "difference (SPN: -weight * distance to the negatives) or ratio "
                      "(CR of AECR-Net: weight * D(out, gt) / D(out, negatives))", choices=("difference", "ratio")),
        "uncertainty_weight": _nonneg(0.0, "weight of the uncertainty-weighted L1 term (per-pixel spread of the "
                                      "negatives and the output; 0: off)", kind="float"),
        "frozen": Field("any", [], "source frozen: spnir model checkpoint files of the frozen models"),
        "degradations": Field("any", [], "source degraded-gt: degradation steps applied to the GT (spnir.data.degrade)"),
        "count": _pos(1, "source degraded-gt: negatives per batch"),
    },
    "ema": {
        "decay": Field("float", 0.999, "decay of the evaluation EMA model (null: no EMA)", check=_decay,
                       expect="in [0, 1)", nullable=True),
    },
    "optim": {
        "type": Field("str", "Adam", "optimiser", choices=("Adam", "AdamW")),
        "lr": _pos(_REQUIRED, "learning rate", kind="float"),
        "betas": Field("float_list", [0.9, 0.99], "Adam betas", check=lambda b: len(b) == 2 and all(0 <= x < 1 for x in b),
                       expect="two numbers in [0, 1)"),
        "weight_decay": _nonneg(0.0, "weight decay", kind="float"),
        "eps": _pos(1e-8, "Adam epsilon", kind="float"),
        "fused": Field("bool", None, "fused Adam/AdamW kernels (CPU and CUDA; null: PyTorch's default)",
                       nullable=True),
        "foreach": Field("bool", None, "multi-tensor (foreach) Adam/AdamW (null: PyTorch's default)", nullable=True),
    },
    "scheduler": {
        "type": Field("str", "constant", "learning-rate schedule",
                      choices=("constant", "multistep", "cosine", "cosine_restarts", "linear")),
        "unit": Field("str", "iter", "unit of milestones / periods / warmup: iter, or epoch (the lr then "
                      "changes once per epoch, as epoch-based official trainings do)", choices=("iter", "epoch")),
        "milestones": Field("int_list", [], "multistep: where the lr is multiplied by gamma"),
        "gamma": _pos(0.5, "multistep factor", kind="float"),
        "t_max": _pos(None, "cosine: half period (default: the whole run)", nullable=True),
        "eta_min": _nonneg(0.0, "cosine: lowest lr", kind="float"),
        "periods": Field("int_list", [], "cosine_restarts: length of each cycle"),
        "restart_weights": Field("float_list", [], "cosine_restarts: lr factor at the start of each cycle "
                                 "(default all 1)"),
        "warmup": _nonneg(0, "linear warmup length (from 0 to the lr)"),
    },
    "train": {
        "total_iter": _pos(None, "iterations to train (or set epochs)", nullable=True),
        "epochs": _pos(None, "epochs to train (converted to iterations from the dataset size)", nullable=True),
        "grad_clip": _pos(None, "clip the gradient norm to this", nullable=True, kind="float"),
        "amp": Field("str", "none", "mixed precision: none, bf16, fp16 (with a GradScaler; CPU and GPU)",
                     choices=("none", "bf16", "fp16")),
        "accumulate": _pos(1, "gradient accumulation: one optimiser step per K micro-batches of "
                           "data.train.batch_size (K times the samples per step)"),
        "channels_last": Field("any", "auto", "channels_last memory format for the model, negatives, feature "
                               "extractor and inputs; auto: on for CUDA, off for CPU",
                               check=lambda v: v in ("auto", True, False), expect="true, false or auto"),
        "compile": Field("bool", False, "torch.compile the model's training forward"),
        "tf32": Field("bool", None, "CUDA: TF32 matmuls and convolutions (true) or full fp32 (false); null: "
                      "PyTorch's defaults; no effect on the CPU", nullable=True),
        "cudnn_benchmark": Field("bool", False, "CUDA: let cuDNN time its algorithms for each input shape; no "
                                 "effect on the CPU"),
        "device": Field("str", "auto", "auto (cuda when available), cpu, cuda", choices=("auto", "cpu", "cuda")),
        "cpu_allocator": Field("str", "keep", "keep: freed CPU memory stays in the process for the next step "
                               "(glibc; no page faults per step); system: leave malloc as it is",
                               choices=("keep", "system")),
    },
    "val": {
        "every": _pos(5000, "validate every N iterations (and at the end)"),
        "metrics": Field("any", ["psnr", "ssim"], "subset of [psnr, ssim, lpips, dists] (lpips, dists: lower is "
                         "better, on RGB; they need `spnir weights lpips-vgg` / `spnir weights dists`)"),
        "vgg_weights": Field("str", "imagenet", "VGG16 of lpips/dists: imagenet (cached torchvision file), a file "
                             "path, or random (seeded; not the metrics' values)"),
        "crop_border": _nonneg(0, "pixels cropped at each border before the metrics"),
        "y_channel": Field("bool", False, "metrics on the Y channel"),
        "convention": Field("str", "basicsr", "metric convention", choices=("basicsr", "matlab")),
        "use_ema": Field("bool", True, "validate the EMA model when there is one"),
        "on_error": Field("str", "skip", "a validation image that fails its check at the start is left out with "
                          "its reason in the log (skip, as spnir eval does) or stops the run (stop)",
                          choices=("skip", "stop")),
        "tile": _pos(None, "restore in tiles of this many LQ pixels (spnir restore's tiler); null: whole images",
                     nullable=True),
        "tile_overlap": _nonneg(32, "overlap of neighbouring tiles in LQ pixels (< val.tile)"),
        "amp": Field("str", "none", "inference precision of validation: none, bf16, fp16",
                     choices=("none", "bf16", "fp16")),
        "save_images": _nonneg(0, "write the first N restored images of each set at each validation to "
                               "<run>/images and TensorBoard"),
    },
    "checkpoint": {
        "every": _pos(5000, "write a resumable checkpoint every N iterations"),
        "keep": _pos(3, "keep the newest K checkpoints"),
    },
    "log": {
        "every": _pos(100, "log losses every N iterations"),
        "tensorboard": Field("bool", True, "write TensorBoard events"),
        "progress": Field("bool", True, "a progress bar on an interactive terminal (false, or output that is not "
                          "a terminal: a plain status line every --status-every seconds)"),
        "wandb": {
            "project": Field("str", None, "Weights & Biases project; W&B syncs the run's TensorBoard events "
                             "(needs log.tensorboard and pip install 'spnir[wandb]'); null: no W&B", nullable=True),
            "name": Field("str", None, "W&B run name (default: the run's name)", nullable=True),
            "mode": Field("str", "offline", "offline: W&B's files in <run>/wandb, uploaded later by `wandb sync`; "
                          "online: uploaded while training (needs `wandb login`)", choices=("offline", "online")),
            "id": Field("str", None, "W&B run id (default: a new one at a fresh start, kept in <run>/wandb and "
                        "continued by a resume)", nullable=True),
        },
    },
}

# Keys that had another name: an old config names its key's new name instead of a near match.
RENAMED: dict[str, str] = {
    "spn.feature_weights": "spn.vgg_weights",
}


# ---------------------------------------------------------------------------------------------- loading


def load_config(
    source: str | os.PathLike | Config,
    overrides: Sequence[str] = (),
    notes: list[str] | None = None,
) -> Config:
    """Read, map (BasicSR-style files), override and validate a config; return it with defaults filled in.

    ``overrides`` are ``"dotted.key=value"`` strings (values parsed as YAML); an error about a value one of
    them set names that ``--set``, not the file. ``notes`` collects what the BasicSR mapping ignored
    (settings with no effect here).
    """
    if isinstance(source, dict):
        raw, origin = _with_base(copy.deepcopy(source), Path.cwd(), "config", ()), "config"
    else:
        raw, origin = _read_yaml(Path(source), ()), str(source)
    if _is_basicsr(raw):
        from spnir.train.basicsr import map_basicsr_options

        raw = map_basicsr_options(raw, origin, notes if notes is not None else [])
    if raw.get("name") is None and not isinstance(source, dict):
        raw["name"] = Path(source).stem
    applied = tuple((apply_override(raw, item), f"--set {_shown_item(item)}") for item in overrides)
    return validate(raw, Origin(origin, applied))


def _read_yaml(path: Path, chain: tuple[Path, ...]) -> Config:
    if not path.is_file():
        raise SpnirError(f"config file {path} does not exist")
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise SpnirError(f"{path}: expected a mapping of settings at the top level, got {type(raw).__name__}")
    return _with_base(raw, path.parent, str(path), chain + (path.resolve(),))


def _with_base(raw: Config, folder: Path, origin: str, chain: tuple[Path, ...]) -> Config:
    """``base: other.yml`` (relative to the file) is read first; this file's keys override it (deep merge)."""
    base = raw.pop("base", None)
    if base is None:
        return raw
    path = (folder / str(base)).resolve()
    if path in chain:
        raise SpnirError(f"{origin}: base {base} includes itself (chain: {' -> '.join(map(str, chain))})")
    return _merge(_read_yaml(path, chain), raw)


def _merge(base: Config, top: Config) -> Config:
    out = dict(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def _is_basicsr(raw: Config) -> bool:
    return "network_g" in raw or "datasets" in raw


def _shown_item(item: str) -> str:
    """A ``--set`` item for messages, a long value cut (:func:`spnir.errors.shown`)."""
    item = item.strip()
    return item if len(item) <= SHOWN_CHARS else f"{item[:SHOWN_CHARS]}... ({len(item)} characters)"


def apply_override(config: Config, item: str) -> str:
    """Set ``a.b.c=value`` in ``config`` (value parsed as YAML, so ``[1, 2]`` is a list); returns the key."""
    if "=" not in item:
        raise SpnirError(f"--set {shown(item)}: expected key=value, e.g. optim.lr=2e-4")
    key, text = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise SpnirError(f"--set {shown(item)}: expected a dotted key before '=', e.g. optim.lr=2e-4")
    value = parse_yaml(text, f"--set {_shown_item(key)}")
    parts = key.split(".")
    node = config
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise SpnirError(f"--set {key}: {'.'.join(parts[:depth + 1])} is not a section")
        node = child
    node[parts[-1]] = value
    return key


# ------------------------------------------------------------------------------------------- validation


@dataclass(frozen=True)
class Origin:
    """Where a config's values came from, for messages: its file, or the ``--set`` that gave a key its value."""

    source: str = "config"
    overrides: tuple[tuple[str, str], ...] = ()  # (dotted key, "--set key=value") in the order applied

    def at(self, *keys: str) -> str:
        """The last ``--set`` that set one of ``keys`` (or a section holding it), else the file."""
        for set_key, item in reversed(self.overrides):
            if any(k == set_key or k.startswith((set_key + ".", set_key + "[")) for k in keys):
                return item
        return self.source


def validate(raw: Config, origin: str | Origin = "config") -> Config:
    """Check ``raw`` against :data:`SCHEMA` and everything a run checks before it starts (see
    :func:`check_runnable`); return a new config with defaults filled in. ``spnir train --print-config``
    and training share this one check."""
    origin = origin if isinstance(origin, Origin) else Origin(origin)
    config = _validate_section(raw, SCHEMA, "", origin)
    check_runnable(config, origin)
    return config


def _validate_section(raw: Any, schema: dict[str, Any], prefix: str, origin: Origin) -> Config:
    if raw is None:
        raw = {}
    section = prefix.rstrip(".")
    if not isinstance(raw, dict):
        raise SpnirError(f"{origin.at(section)}: {section or 'the config'} must be a mapping of settings, "
                         f"got {shown(raw)}")
    for key in raw:
        dotted = prefix + str(key)
        if dotted in RENAMED:
            raise SpnirError(f"{origin.at(dotted)}: {dotted} was renamed {RENAMED[dotted]}")
        if key not in schema:
            near = difflib.get_close_matches(str(key), list(schema), n=2, cutoff=0.6)
            hint = f"; did you mean {' or '.join(prefix + n for n in near)}?" if near else ""
            raise SpnirError(f"{origin.at(prefix + str(key))}: unknown key {shown(prefix + str(key))}{hint} "
                             f"(known here: {', '.join(schema)})")
    out: Config = {}
    for key, spec in schema.items():
        name = prefix + key
        if isinstance(spec, dict):
            out[key] = _validate_section(raw.get(key), spec, name + ".", origin)
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
    value = _coerce(value, spec, name, origin)
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
    words = {"int": "an integer", "float": "a number", "bool": "true or false", "str": "a string",
             "dict": "a mapping", "int_list": "a list of integers", "float_list": "a list of numbers",
             "float_map": "a mapping of names to numbers", "items": "a list of mappings", "any": "a value"}
    text = words[spec.kind]
    if spec.expect:
        text += f" {spec.expect}" if spec.kind in ("int", "float") else f" ({spec.expect})"
    if spec.choices:
        text = f"one of {list(spec.choices)}"
    return text


def _number(value: Any, kind: str) -> Any:
    """``value`` as int/float, accepting YAML's unparsed ``1e-4`` strings; ``None`` when not a number."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            return None
    if not isinstance(value, (int, float)):
        return None
    if kind == "int":
        return int(value) if float(value).is_integer() else None
    return float(value)


def _coerce(value: Any, spec: Field, name: str, origin: Origin) -> Any:
    bad = SpnirError(f"{origin.at(name)}: {name} = {shown(value)} ({type(value).__name__}): expected {_describe(spec)}")
    kind = spec.kind
    if kind in ("int", "float"):
        number = _number(value, kind)
        if number is None:
            raise bad
        return number
    if kind == "bool":
        if not isinstance(value, bool):
            raise bad
        return value
    if kind == "str":
        if not isinstance(value, str):
            raise bad
        return value
    if kind == "dict":
        if not isinstance(value, dict):
            raise bad
        return copy.deepcopy(value)
    if kind in ("int_list", "float_list"):
        if isinstance(value, (int, float, str)) and not isinstance(value, bool):
            value = [value]
        if not isinstance(value, (list, tuple)):
            raise bad
        numbers = [_number(v, kind[:-5]) for v in value]
        if any(n is None for n in numbers):
            raise bad
        return numbers
    if kind == "float_map":
        if not isinstance(value, dict):
            raise bad
        numbers = {str(k): _number(v, "float") for k, v in value.items()}
        if any(n is None for n in numbers.values()):
            raise bad
        return numbers
    if kind == "items":
        if not isinstance(value, list):
            raise bad
        return [_validate_section(entry, spec.item or {}, f"{name}[{i}].", origin) for i, entry in enumerate(value)]
    return copy.deepcopy(value)


def check_runnable(config: Config, origin: str | Origin = "config") -> None:
    """What a run would refuse at its start, checked from the settings alone (no data, no weights are read):
    rules across keys, the model preset with its scale and ``model.args``, the loss, each data set's
    degradations against the model's scale, the patch size, the SPN options."""
    origin = origin if isinstance(origin, Origin) else Origin(origin)
    _check_schedule(config, origin)
    _check_speed_settings(config, origin)
    _check_model(config["model"], origin)
    _check_spn(config["spn"], origin)
    if config["log"]["wandb"]["project"] is not None:
        _check_wandb(config["log"], origin)
    from spnir.losses import build_loss
    from spnir.metric_suite import METRICS, check_metric_names

    loss = config["loss"]
    try:
        build_loss({"type": loss["type"], "loss_weight": loss["weight"], **loss["args"]})  # names and arguments
    except SpnirError as exc:
        raise SpnirError(f"{origin.at('loss')}: {exc}") from None
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


def _check_schedule(config: Config, origin: Origin) -> None:
    train, sched = config["train"], config["scheduler"]
    if (train["total_iter"] is None) == (train["epochs"] is None):
        raise SpnirError(f"{origin.at('train.total_iter', 'train.epochs')}: set exactly one of train.total_iter "
                         f"and train.epochs")
    if sched["unit"] == "epoch" and train["epochs"] is None:
        raise SpnirError(f"{origin.at('scheduler.unit', 'train.epochs')}: scheduler.unit = epoch needs train.epochs")
    if sched["type"] == "multistep" and sorted(sched["milestones"]) != sched["milestones"]:
        raise SpnirError(f"{origin.at('scheduler.milestones')}: scheduler.milestones must increase; "
                         f"got {sched['milestones']}")
    if sched["type"] == "cosine_restarts":
        if not sched["periods"]:
            raise SpnirError(f"{origin.at('scheduler.type', 'scheduler.periods')}: scheduler.type cosine_restarts "
                             f"needs scheduler.periods")
        if sched["restart_weights"] and len(sched["restart_weights"]) != len(sched["periods"]):
            raise SpnirError(f"{origin.at('scheduler.restart_weights', 'scheduler.periods')}: "
                             f"scheduler.restart_weights needs one entry per period ({len(sched['periods'])}); "
                             f"got {sched['restart_weights']}")


def _check_speed_settings(config: Config, origin: Origin) -> None:
    """``optim.fused`` / ``optim.foreach`` exclude each other; ``val.tile_overlap`` is smaller than the tile."""
    if config["optim"]["fused"] and config["optim"]["foreach"]:
        raise SpnirError(f"{origin.at('optim.fused', 'optim.foreach')}: optim.fused and optim.foreach are both "
                         "true; choose one")
    val = config["val"]
    if val["tile"] is not None and val["tile_overlap"] >= val["tile"]:
        raise SpnirError(f"{origin.at('val.tile', 'val.tile_overlap')}: val.tile_overlap = {val['tile_overlap']} "
                         f"must be smaller than val.tile = {val['tile']}")


def _check_model(model: Config, origin: Origin) -> None:
    """The preset (or ``module:callable``) exists, takes ``model.scale`` and accepts ``model.args``."""
    from spnir.archs.arguments import ArgumentError, check_arguments
    from spnir.archs.registry import check_overrides, check_scale

    name = model["name"]
    try:
        if ":" in name:
            check_arguments(import_factory(name), model["args"], f"model {name}", "model.args.", skip=("scale",))
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
    if not spn["enabled"]:
        return
    weight = spn["weight"]
    if weight != "auto" and (_number(weight, "float") is None or _number(weight, "float") < 0):
        raise SpnirError(f"{origin.at('spn.weight')}: spn.weight = {shown(weight)}: expected a number >= 0 or 'auto'")
    if weight != "auto":
        spn["weight"] = _number(weight, "float")
    if spn["source"] == "history" and len(spn["periods"]) != len(spn["decays"]):
        raise SpnirError(f"{origin.at('spn.periods', 'spn.decays')}: spn.periods ({spn['periods']}) and "
                         f"spn.decays ({spn['decays']}) need one entry per negative")
    if not spn["layer_weights"]:
        raise SpnirError(f"{origin.at('spn.layer_weights')}: spn.layer_weights is empty; name at least one VGG layer")
    from spnir.features import layer_names

    known = layer_names(spn["features"])
    unknown = [k for k in spn["layer_weights"] if k not in known]
    if unknown:
        near = difflib.get_close_matches(unknown[0], known, n=1)
        hint = f" (did you mean {near[0]}?)" if near else ""
        raise SpnirError(f"{origin.at('spn.layer_weights', 'spn.features')}: spn.layer_weights names {unknown}"
                         f"{hint}, which spn.features {spn['features']} does not have; its layers: "
                         f"{', '.join(known)}")
    if spn["max_distance"] is not None and spn["form"] != "difference":
        raise SpnirError(f"{origin.at('spn.max_distance', 'spn.form')}: spn.max_distance caps the distance of "
                         f"spn.form difference; spn.form {spn['form']} takes no max_distance")
    if spn["source"] == "frozen" and not spn["frozen"]:
        raise SpnirError(f"{origin.at('spn.source', 'spn.frozen')}: spn.source = frozen needs spn.frozen: a list "
                         f"of spnir model checkpoint files")
    if spn["source"] == "degraded-gt":
        if not spn["degradations"]:
            raise SpnirError(f"{origin.at('spn.source', 'spn.degradations')}: spn.source = degraded-gt needs "
                             f"spn.degradations, e.g. [{{type: blur, sigma: [0.5, 2]}}, "
                             f"{{type: noise, sigma: [0, 15]}}]")
        from spnir.data.degrade import build_degradation

        build_degradation(spn["degradations"], where=f"{origin.at('spn.degradations')}: spn.degradations")


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


# ------------------------------------------------------------------------------------------ env paths

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


PATH_RULE = ("a relative path in a config is taken from the working directory, as on the command line; "
             "only base: is relative to the config file")


def expand_path(value: str, key: str) -> Path:
    """The existing file or folder a config's path names: every ``${VAR}`` replaced from the environment, a
    relative path taken from the working directory (:data:`PATH_RULE`). An unset variable or a missing path
    is an error naming the key and the rule."""
    missing = [name for name in _VAR.findall(value) if not os.environ.get(name)]
    if missing:
        raise SpnirError(
            f"{key} = {shown(value)} uses the environment variable {missing[0]}, which is not set; "
            f"point it at your copy of the data, e.g. export {missing[0]}=/data/..."
        )
    path = Path(os.path.expanduser(_VAR.sub(lambda m: os.environ[m.group(1)], value)))
    if not path.exists():
        where = f" (from the working directory {Path.cwd()}; {PATH_RULE})" if not path.is_absolute() else ""
        raise SpnirError(f"{key} = {shown(value)}: {path} does not exist{where}")
    return path


def referenced_variables(config: Config) -> set[str]:
    """Names of the ``${VAR}`` environment variables a config's data paths use."""
    found: set[str] = set()
    sources: Iterable[Config] = [config["data"]["train"], *config["data"]["val"]]
    for source in sources:
        for key in ("lq", "gt", "pairs"):
            if source.get(key):
                found.update(_VAR.findall(source[key]))
    if config["model"]["pretrained"]:
        found.update(_VAR.findall(config["model"]["pretrained"]))
    return found


def dump_config(config: Config) -> str:
    """The config as YAML (the run directory keeps it beside the checkpoints)."""
    return yaml.safe_dump(config, sort_keys=False)
