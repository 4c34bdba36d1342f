"""Model files: official and spnir weights read safely into presets, and spnir's own model checkpoint format.

Reading never unpickles arbitrary objects: ``.pth``/``.pt``/``.ckpt`` files go through
``torch.load(weights_only=True)``, with exactly the numpy scalar types allowed besides (some releases,
FFA-Net's among them, store numpy float64 metrics beside the weights); ``.safetensors`` files through
``safetensors``.

Which state dict inside the file is used, in order:

1. ``key=`` when given (e.g. ``"params_ema"``);
2. a spnir model checkpoint: its ``params``;
3. BasicSR's ``{"params": ..., "params_ema": ...}``: ``params`` when present, else ``params_ema`` (BasicSR's
   ``load_network`` default, which its and SwinIR's/NAFNet's test options keep);
4. a single wrapper entry ``state_dict``, ``model`` or ``net`` holding the weights (DehazeFormer, FFA-Net);
5. the file itself.

``module.`` prefixes (``DataParallel``) are removed, then the model family's checkpoint filter
(``registry.register_checkpoint_filter``) maps what remains to the model's keys.

spnir's model checkpoint (what :func:`save_model_checkpoint` writes, see ``docs/models.md``)::

    {"format": "spnir-model", "version": 1,
     "preset": {"name": "swinir-light", "scale": 2, "overrides": {...}},
     "params": state_dict, "meta": {...}}

or a ``.safetensors`` file holding the state dict, with ``format``, ``version``, ``preset`` and ``meta``
(JSON) in its metadata. :func:`model_from_checkpoint` rebuilds the model from such a file alone;
:func:`model_for_inference` (what ``spnir restore`` and ``spnir eval`` use) also takes a preset name for
official weights, a scale and preset overrides (test-time options such as NAFNet's ``local=True``).
"""
from __future__ import annotations

import contextlib
import json
import os
import pickle
import re
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from spnir.archs.registry import (
    StateDict,
    check_overrides,
    check_scale,
    checkpoint_filter,
    create_model,
    get_preset,
    list_models,
    preset_record,
)
from spnir.atomic import atomic_path, save_torch_atomic
from spnir.errors import Param, ParameterError, SpnirError, in_current_words
from spnir.weights.checksum import KEY as CHECKSUM_KEY
from spnir.weights.checksum import content_checksum, with_checksum
from spnir.weights.checksum import verify as verify_checksum

FORMAT = "spnir-model"
FORMAT_VERSION = 1
BASICSR_KEYS = ("params", "params_ema")
WRAPPER_KEYS = ("state_dict", "model", "net")
SAFETENSORS_SUFFIX = ".safetensors"

# numpy scalars pickle as scalar(dtype, bytes): allow that constructor, the dtype class, and the numeric
# dtype classes only (no object dtype). The constructor lives in numpy._core (numpy >= 2) or numpy.core
# (numpy 1); it is allowed under both module names, so files saved by either numpy read under either.
_NUMERIC_DTYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
                   "float16", "float32", "float64")
_SCALAR_NAMES = ("numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar")


def numpy_scalar_allow_list(numpy: Any = np) -> list[Any]:
    """The globals :func:`numpy_scalar_globals` allows, for the given numpy module (1.x or 2.x)."""
    scalar = (getattr(numpy, "_core", None) or numpy.core).multiarray.scalar
    return [
        *((scalar, name) for name in _SCALAR_NAMES),
        numpy.dtype,
        *(type(numpy.dtype(name)) for name in _NUMERIC_DTYPES),
    ]


NUMPY_SCALAR_GLOBALS: list[Any] = numpy_scalar_allow_list()


def numpy_scalar_globals() -> contextlib.AbstractContextManager:
    """Context in which ``torch.load(weights_only=True)`` also accepts numpy numeric scalars, nothing more."""
    return torch.serialization.safe_globals(NUMPY_SCALAR_GLOBALS)


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """The raw content of a checkpoint file, read safely (see the module doc); errors name the file.

    A file spnir wrote carries a checksum of its tensors, verified here ("damaged: checksum mismatch");
    a cut-off file is reported as truncated; a file that pickles code or objects is refused.
    """
    path = Path(path)
    if not path.is_file():
        raise SpnirError(f"{path}: no such checkpoint file")
    if path.suffix.lower() == SAFETENSORS_SUFFIX:
        return _read_safetensors(path)
    try:
        with numpy_scalar_globals():
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if _truncated(path, exc):
            raise SpnirError(_TRUNCATED.format(path=path)) from None
        if "GLOBAL" in str(exc) or "Unsupported global" in str(exc):  # it names an object to build
            raise SpnirError(_explain_unpickling_error(path, exc)) from None
        raise SpnirError(f"{path}: cannot read as a PyTorch checkpoint (damaged, or not a torch.save file); "
                         f"expected a file written by torch.save or a .safetensors file") from None
    except Exception as exc:  # noqa: BLE001 - the unpickler fails in many ways on a broken file
        if _truncated(path, exc):
            raise SpnirError(_TRUNCATED.format(path=path)) from None
        first = (str(exc).splitlines() or [type(exc).__name__])[0]
        raise SpnirError(
            f"{path}: cannot read as a PyTorch checkpoint ({first}); "
            f"expected a file written by torch.save or a .safetensors file"
        ) from None
    if not isinstance(obj, Mapping):
        raise SpnirError(f"{path}: holds a {type(obj).__name__}, expected a dict of weights (a state dict)")
    if str(obj.get("format", "")).startswith("spnir-"):  # files spnir wrote; releases have none
        verify_checksum(obj, str(path))
    return {k: v for k, v in obj.items() if k != CHECKSUM_KEY}


_TRUNCATED = "{path}: truncated: the file ends early (an interrupted copy or a full disk); use another copy"
_ZIP_MAGIC = b"PK\x03\x04"


def _truncated(path: Path, exc: Exception) -> bool:
    """Whether reading failed because the file is cut off (torch's zip format or the legacy pickle)."""
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head == _ZIP_MAGIC:
        return not zipfile.is_zipfile(path)
    return isinstance(exc, EOFError) or "Ran out of input" in str(exc) or "truncated" in str(exc)


def _explain_unpickling_error(path: Path, exc: Exception) -> str:
    found = re.search(r"GLOBAL ([\w.]+)", str(exc))
    what = f"the Python object {found.group(1)}" if found else "Python objects other than tensors"
    return (
        f"{path}: refused: the file pickles {what}, and unpickling objects can run code. spnir reads "
        f"tensors, numbers and strings only (weights-only loading). Ask the file's author for its state dict "
        f"or a .safetensors file"
    )


def _read_safetensors(path: Path) -> dict[str, Any]:
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError) as exc:
        raise SpnirError(f"{path}: cannot read as a .safetensors file ({exc})") from None
    if metadata.get("format") != FORMAT:
        return tensors
    if CHECKSUM_KEY in metadata:
        verify_checksum({"params": tensors, CHECKSUM_KEY: metadata[CHECKSUM_KEY]}, str(path))
    try:
        preset = json.loads(metadata["preset"])
        meta = json.loads(metadata.get("meta", "{}"))
        version = int(metadata["version"])
    except (KeyError, ValueError) as exc:
        raise SpnirError(f"{path}: spnir checkpoint with broken metadata ({exc})") from None
    return {"format": FORMAT, "version": version, "preset": preset, "params": tensors, "meta": meta}


def checkpoint_preset(content: Mapping[str, Any]) -> dict[str, Any] | None:
    """The recorded ``{"name", "scale", "overrides"}`` of a spnir model checkpoint, else ``None``."""
    if content.get("format") != FORMAT:
        return None
    return dict(content["preset"])


def select_state_dict(content: Mapping[str, Any], key: str | None = None, source: str = "checkpoint") -> StateDict:
    """The state dict inside a checkpoint's content, chosen as the module doc says; no family filter."""
    if content.get("format") == FORMAT and content.get("version", 0) > FORMAT_VERSION:
        raise SpnirError(
            f"{source}: spnir checkpoint version {content['version']}; this spnir reads up to "
            f"{FORMAT_VERSION} (upgrade spnir)"
        )
    if key is not None:
        if key not in content:
            raise SpnirError(f"{source}: no entry {key!r}; the file holds {_describe_entries(content)}")
        state = content[key]
    elif content.get("format") == FORMAT:
        state = content["params"]
    elif any(k in content for k in BASICSR_KEYS):
        state = content["params"] if "params" in content else content["params_ema"]
    else:
        state = content
        wrappers = [k for k in WRAPPER_KEYS if isinstance(content.get(k), Mapping)]
        if not _all_tensors(content) and len(wrappers) == 1:
            state = content[wrappers[0]]
    if not isinstance(state, Mapping):
        raise SpnirError(f"{source}: entry {key!r} is a {type(state).__name__}, expected a state dict")
    state = _strip_prefix(dict(state), "module.")
    if not _all_tensors(state):
        raise ParameterError(f"{source}: does not look like a state dict (it holds {_describe_entries(state)}); "
                             "choose the entry holding the weights with ", Param("key", python="key="))
    return state


def _all_tensors(mapping: Mapping[str, Any]) -> bool:
    return bool(mapping) and all(isinstance(v, torch.Tensor) for v in mapping.values())


def _describe_entries(mapping: Mapping[str, Any], limit: int = 8) -> str:
    items = [f"{k!r} ({type(v).__name__})" for k, v in list(mapping.items())[:limit]]
    more = f" and {len(mapping) - limit} more" if len(mapping) > limit else ""
    return (", ".join(items) + more) if items else "nothing"


def _strip_prefix(state: StateDict, prefix: str) -> StateDict:
    return {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in state.items()}


def _family(model: nn.Module) -> str | None:
    record = preset_record(model)
    return get_preset(record["name"]).family if record else None


def _apply_filter(state: StateDict, model: nn.Module) -> StateDict:
    family = _family(model)
    fn = checkpoint_filter(family) if family else None
    return _strip_prefix(fn(state, model), "module.") if fn else state


def _differences(state: StateDict, model: nn.Module) -> tuple[list[str], list[str], list[str]]:
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
        for k, v in own.items()
        if k in state and tuple(state[k].shape) != tuple(v.shape)
    ]
    return missing, unexpected, shapes


def _listing(items: list[str], limit: int = 5) -> str:
    return ", ".join(items[:limit]) + (f", ... ({len(items) - limit} more)" if len(items) > limit else "")


def guess_presets(state: StateDict) -> list[str]:
    """Presets (``"name xS"``) whose keys and shapes fit ``state`` exactly; built on the meta device."""
    fits = []
    for name in list_models():
        preset = get_preset(name)
        for scale in preset.scales or (None,):
            try:
                with torch.device("meta"):
                    candidate = create_model(name, scale)
                filtered = _apply_filter(dict(state), candidate)
            except Exception:  # noqa: BLE001 - a preset that cannot be built on meta is just not a guess
                continue
            if not any(_differences(filtered, candidate)):
                fits.append(name if scale is None else f"{name} x{scale}")
    return fits


def _describe_model(model: nn.Module) -> str:
    record = preset_record(model)
    if not record:
        return f"the {type(model).__name__} model"
    scale = f" x{record['scale']}" if record.get("scale") else ""
    overrides = f" with {record['overrides']}" if record.get("overrides") else ""
    return f"preset {record['name']!r}{scale}{overrides}"


def load_state_into(
    model: nn.Module, content: Mapping[str, Any], key: str | None = None, strict: bool = True,
    source: str = "checkpoint",
) -> nn.modules.module._IncompatibleKeys:
    """Load already-read checkpoint ``content`` into ``model`` (see :func:`load_checkpoint`)."""
    state = _apply_filter(select_state_dict(content, key, source), model)
    missing, unexpected, shapes = _differences(state, model)
    if shapes or (strict and (missing or unexpected)):
        problems = []
        if missing:
            problems.append(f"{len(missing)} keys missing from the file ({_listing(missing)})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected keys ({_listing(unexpected)})")
        if shapes:
            problems.append(f"{len(shapes)} shapes differ ({_listing(shapes, 3)})")
        hints = []
        recorded = checkpoint_preset(content)
        if recorded:
            hints.append(f"the file records preset {recorded['name']!r} scale {recorded['scale']}")
        fits = guess_presets(select_state_dict(content, key, source))
        if fits:
            hints.append(f"it fits {', '.join(fits)}")
        hint = f" ({'; '.join(hints)})" if hints else ""
        raise SpnirError(f"{source}: does not fit {_describe_model(model)}: {'; '.join(problems)}{hint}")
    return model.load_state_dict(state, strict=strict)


def load_checkpoint(
    model: nn.Module, path: str | os.PathLike, key: str | None = None, strict: bool = True
) -> nn.modules.module._IncompatibleKeys:
    """Load the weights in ``path`` (official release, BasicSR file, spnir checkpoint) into ``model``.

    ``key`` picks an entry such as ``"params_ema"``; the default is described in the module doc. A file
    that does not fit raises :class:`SpnirError` listing missing / unexpected keys and differing shapes,
    and the presets it would fit. ``strict=False`` tolerates missing and unexpected keys, never shapes.
    """
    return load_state_into(model, read_checkpoint(path), key=key, strict=strict, source=str(path))


def _plain(value: Any, what: str) -> Any:
    try:
        return json.loads(json.dumps(value))
    except (TypeError, ValueError) as exc:
        raise SpnirError(f"{what} must be plain values (numbers, strings, lists, dicts): {exc}") from None


def save_model_checkpoint(
    model: nn.Module, path: str | os.PathLike, meta: Mapping[str, Any] | None = None,
    metadata: Mapping[str, str] | None = None,
) -> Path:
    """Write ``model`` (built by ``create_model``) as a spnir model checkpoint; ``.safetensors`` or torch.

    ``meta`` holds plain values (iteration, metrics). ``metadata``: more string entries of a ``.safetensors``
    file's header, for other tools (``spnir export`` writes ``spnir.task`` and the like); refused for torch
    files. The file is written atomically.
    """
    path = Path(path)
    model = getattr(model, "_orig_mod", model)  # torch.compile wrapper
    record = preset_record(model)
    if not record:
        raise SpnirError(f"{path}: cannot save: the model was not built by spnir.archs.create_model (no preset)")
    preset = _plain(record, "preset overrides")
    meta = _plain(dict(meta or {}), "checkpoint meta")
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    if path.suffix.lower() != SAFETENSORS_SUFFIX:
        if metadata:
            raise SpnirError(f"{path}: header metadata is for .safetensors files")
        save_torch_atomic(with_checksum({"format": FORMAT, "version": FORMAT_VERSION, "preset": preset,
                                         "params": state, "meta": meta}), path)
        return path
    from safetensors.torch import save

    header = {"format": FORMAT, "version": str(FORMAT_VERSION), "preset": json.dumps(preset),
              "meta": json.dumps(meta), CHECKSUM_KEY: content_checksum({"params": state})}
    clash = sorted(set(header) & set(metadata or {}))
    if clash:
        raise SpnirError(f"{path}: metadata keys {clash} are spnir's own")
    header.update(metadata or {})
    with atomic_path(path) as tmp:  # written through Python's file: a full disk is an OSError, named
        tmp.write_bytes(save(state, metadata=header))
    return path


def input_channels(model: nn.Module) -> int:
    """Channels the model takes (1 means grayscale): its ``in_channels`` when it says, else those of its
    first registered convolution (3 when it has none)."""
    declared = getattr(model, "in_channels", None)
    if isinstance(declared, int):
        return declared
    first = next((m for m in model.modules() if isinstance(m, nn.Conv2d)), None)
    return first.in_channels if first is not None else 3


def model_for_inference(
    checkpoint: str | os.PathLike,
    preset: str | None = None,
    scale: int | None = None,
    key: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> tuple[nn.Module, int]:
    """The model of ``checkpoint`` with its weights loaded, and its scale (1 for presets that do not upscale).

    What ``spnir restore`` and ``spnir eval`` build. ``preset`` names the architecture; it may be left out
    for a spnir model checkpoint, which records it. When the file records the preset in use, its recorded
    overrides and scale are the starting point: ``overrides`` (test-time options such as NAFNet's
    ``local=True``) go on top, and a ``scale`` other than the recorded one is an error. ``key`` picks the
    state dict entry (see :func:`load_checkpoint`). ``overrides`` are checked against the preset's arguments
    before the file is read when ``preset`` is given. Messages name ``overrides``, ``scale`` and ``preset`` as
    the running command's options when there is one (:func:`spnir.errors.in_current_words`).
    """
    where = in_current_words(Param("overrides", python="override")) + " "  # "--set num_feats: ..." in a command
    if preset is not None:
        check_overrides(preset, overrides or {}, where)
    content = read_checkpoint(checkpoint)
    recorded = checkpoint_preset(content)
    name = preset or (recorded or {}).get("name")
    if name is None:
        raise ParameterError(f"{checkpoint}: not a spnir model checkpoint (no preset recorded), so name its preset "
                             "with ", Param("preset", python="preset="), " for official or foreign weights")
    options = dict(overrides or {})
    if recorded and recorded["name"] == name:
        options = {**recorded.get("overrides", {}), **options}
        trained = recorded.get("scale")
        if scale not in (None, trained) and not (trained is None and scale == 1):
            raise ParameterError(f"{checkpoint}: preset {name!r} was trained for scale {trained or 1}; got ",
                                 Param("scale", scale))
        scale = trained if scale is None else scale
    if get_preset(name).scales is None and scale == 1:
        scale = None
    check_overrides(name, overrides or {}, where)
    check_scale(name, scale, in_current_words(Param("scale")))
    model = create_model(name, scale, **options)
    load_state_into(model, content, key=key, source=str(checkpoint))
    return model, scale or 1


def model_from_checkpoint(path: str | os.PathLike, key: str | None = None, **overrides: Any) -> nn.Module:
    """Build the preset recorded in a spnir model checkpoint and load its weights (entry ``key`` if given).

    ``overrides`` change test-time options on top of the recorded ones (e.g. ``local=True`` for NAFNet).
    """
    return model_for_inference(path, key=key, overrides=overrides)[0]
