"""Models out of the toolkit: ONNX (checked by running it in onnxruntime) and safetensors (with metadata,
checked by loading it back as a checkpoint, see :func:`export_safetensors`).

ONNX export goes through ``torch.onnx.export(dynamo=True)``: ``torch.export`` traces the model with symbolic
height and width (``dynamic=True``), so padding to a window multiple, NAFNet's local pooling and IDT's patch
split follow the input size in the graph (each family writes those with tensor arithmetic while exporting,
see ``torch.compiler.is_exporting`` in :mod:`spnir.archs`). A dynamic graph starts with a check that refuses
inputs smaller than the model's minimum side (:func:`min_size`): onnxruntime fails on them naming the node
``spnir: ... at least N px``, where the graph would otherwise return a wrong image. The file is written to a
temporary name, run in onnxruntime against the PyTorch model on the traced size and, for dynamic exports, on
a sweep of sizes (:func:`verification_sizes`: odd sides, sides just above the minimum and past one and two
windows or patches), checked to refuse a side below the minimum, and only moved to its name when every
difference is within :data:`TOLERANCE`. A graph whose validity was narrowed to some sizes during tracing (a
branch on the size that tensor arithmetic does not express) is refused. Arguments are checked before any
tracing: the opset (:func:`check_opset`), and the memory the traced size needs (:mod:`spnir.restore`'s estimate).

Needs the ``export`` extra: ``pip install 'spnir[export]'`` (onnx, onnxscript, onnxruntime).
"""
from __future__ import annotations

import contextlib
import copy
import importlib.util
import io
import json
import logging
import os
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import spnir
from spnir.archs.model_files import input_channels, model_for_inference, save_model_checkpoint
from spnir.archs.registry import get_preset
from spnir.atomic import atomic_path
from spnir.errors import Param, ParameterError, SpnirError

TOLERANCE = {"fp32": 1e-4, "fp16": 1e-2}  # max |onnxruntime - PyTorch fp32| on [0, 1] images
DEFAULT_OPSET = 18
MIN_OPSET = 18  # the exporter's own operator sets start here; below, its version conversion may silently fail
MAX_SIZE = 8192  # the largest height/width a dynamic export is traced to accept
MIN_SIZE = 16  # the smallest, unless the model sets ``export_min_size`` (IDT: its patch size)
EXPORT_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


@dataclass(frozen=True)
class SizeCheck:
    """One verification run: input size and the largest absolute difference onnxruntime vs PyTorch."""

    height: int
    width: int
    max_diff: float


def describe_model(model: nn.Module) -> dict[str, str]:
    """What a deployed file says about ``model`` (built by ``create_model``): spnir version, preset, scale, task,
    input channels and range; strings, written as ``spnir.KEY`` metadata in ONNX and safetensors files."""
    record = getattr(model, "spnir_preset", None)
    if not record:
        raise SpnirError("cannot export: the model was not built by spnir.archs.create_model (no preset)")
    preset = get_preset(record["name"])
    channels = input_channels(model)
    return {
        "version": spnir.__version__,
        "preset": record["name"],
        "architecture": preset.family,
        "scale": str(record.get("scale") or 1),
        "task": preset.task,
        "overrides": json.dumps(record.get("overrides", {}), sort_keys=True),
        "channels": str(channels),
        "input": "NCHW float in [0, 1], " + ("gray" if channels == 1 else "RGB"),
        "min_size": str(min_size(model)),
    }


def prefixed(metadata: Mapping[str, str]) -> dict[str, str]:
    """``{"task": "sr"}`` -> ``{"spnir.task": "sr"}``: the keys deployed files carry."""
    return {f"spnir.{key}": value for key, value in metadata.items()}


def min_size(model: nn.Module) -> int:
    """The smallest height/width a dynamic ONNX export of ``model`` accepts."""
    return max(MIN_SIZE, int(getattr(model, "export_min_size", MIN_SIZE)))


def max_opset() -> int:
    """The newest ONNX opset the installed ``onnx`` knows."""
    import onnx

    return int(onnx.defs.onnx_opset_version())


def check_opset(opset: int) -> None:
    """Refuse an opset the exporter does not write as asked (below :data:`MIN_OPSET`, above :func:`max_opset`)."""
    newest = max_opset()
    if not MIN_OPSET <= opset <= newest:
        raise ParameterError(Param("opset", opset), f": the exporter writes opsets {MIN_OPSET} to {newest} (below "
                             f"{MIN_OPSET} its conversion may fail and keep another opset); choose one in that range")


def opset_of(path: str | os.PathLike) -> int:
    """The default-domain opset an ONNX file holds."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return next(int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx"))


def check_traced_size(size: int | None) -> None:
    """Refuse a traced height ``size`` whose input (``size`` x ``1.5 size``) has a side over :data:`MAX_SIZE`.
    It needs no model, so a command checks it before reading the checkpoint."""
    if size is not None and size + size // 2 > MAX_SIZE:
        raise ParameterError(Param("size", size), f": the traced input is {size}x{size + size // 2}, over the "
                             f"largest side {MAX_SIZE}; a dynamic export takes larger images whatever its traced "
                             "size")


def verification_sizes(model: nn.Module, size: int | None, dynamic: bool) -> list[tuple[int, int]]:
    """(height, width) of the traced input first, then, when ``dynamic``, a sweep to verify on.

    The trace is not square (height and width must stay separate symbols). The sweep pairs the sides ``m``
    (the minimum side, one window or patch), ``m + 1``, ``m + 7``, ``2m - 1``, ``2m + 1`` and ``3m + 5``:
    odd sides, every one not a multiple of the usual windows but ``m``, across one, two and three windows or
    patches, so that padding, local windows and patch splits change between checks.
    """
    check_traced_size(size)
    low = min_size(model)
    base = max(size or 64, low)
    if size is not None and size < low:
        raise ParameterError(Param("size", size), f": this model exports for sides of at least {low}")
    traced = (base, base + base // 2)
    if not dynamic:
        return [traced]
    sides = [low, low + 1, low + 7, 2 * low - 1, 2 * low + 1, 3 * low + 5]
    sweep = list(zip(sides, sides[1:] + sides[:1]))
    return [traced, *[hw for hw in sweep if hw != traced]]


def check_memory_for(model: nn.Module, sizes: list[tuple[int, int]], channels: int) -> None:
    """Refuse sizes whose verification (PyTorch and onnxruntime, one after the other) would not fit in memory."""
    from spnir.restore import MemoryModel, available_memory

    free = available_memory("cpu")
    height, width = max(sizes, key=lambda hw: hw[0] * hw[1])
    if free is None or height * width <= 256 * 256:
        return
    need = 2 * MemoryModel.measure(model, channels).forward_bytes(height, width)
    if need > free:
        raise ParameterError(Param("size"), f": verifying the export at {height}x{width} needs about "
                             f"{need / 1e9:.2g} GB, more than the {free / 1e9:.2g} GB free; choose a smaller size (a "
                             "dynamic export takes larger images whatever its traced size)")


def require_export_packages() -> None:
    """Stop with the way out when the ``export`` extra is not installed."""
    missing = [name for name in EXPORT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        raise SpnirError(f"ONNX export needs {', '.join(missing)} (not installed): pip install 'spnir[export]'")


def export_onnx(
    model: nn.Module,
    path: str | os.PathLike,
    *,
    dynamic: bool = False,
    size: int | None = None,
    opset: int = DEFAULT_OPSET,
    half: bool = False,
) -> list[SizeCheck]:
    """Write ``model`` as an ONNX file at ``path`` and return the verification runs (see the module doc).

    ``size``: the traced height (its width is 1.5 times it); ``dynamic``: height and width are inputs of the
    graph (from the model's minimum side to :data:`MAX_SIZE`; smaller sides are refused by the graph);
    ``half``: float16 weights, input and output. A difference above :data:`TOLERANCE`, a graph that accepts a
    side below its minimum, or a file of another opset than ``opset`` raises :class:`SpnirError` and writes
    nothing.
    """
    require_export_packages()
    check_opset(opset)
    model = getattr(model, "_orig_mod", model).eval()
    metadata = describe_model(model)
    channels = int(metadata["channels"])
    sizes = verification_sizes(model, size, dynamic)
    dtype = torch.float16 if half else torch.float32
    reference = copy.deepcopy(model).to(device="cpu", dtype=torch.float32)  # the caller's model stays as it is
    check_memory_for(reference, sizes, channels)
    exported = copy.deepcopy(reference).half() if half else reference
    sample = torch.rand(1, channels, *sizes[0], generator=torch.Generator().manual_seed(0), dtype=dtype)
    low = min_size(model)
    shapes = None
    if dynamic:
        shapes = ({2: torch.export.Dim("height", min=low, max=MAX_SIZE),
                   3: torch.export.Dim("width", min=low, max=MAX_SIZE)},)
    with _quiet_exporter():
        try:
            program = torch.onnx.export(exported, (sample,), None, dynamo=True, dynamic_shapes=shapes,
                                        opset_version=opset, input_names=["input"], output_names=["output"],
                                        verbose=False)
        except Exception as exc:  # noqa: BLE001 - the exporter fails in many ways; say which step
            raise SpnirError(f"ONNX export of preset {metadata['preset']!r} failed: {_first_line(exc)}") from None
    if program is None:  # torch documents None for its older exporter only (dynamo=False), not used here
        raise SpnirError(f"ONNX export of preset {metadata['preset']!r} failed: the exporter returned no program "
                         f"(torch {torch.__version__})")
    if dynamic:
        _check_still_dynamic(program, metadata["preset"], low)
        _refuse_smaller_inputs(program.model, low, half)
    program.model.metadata_props.update(prefixed(metadata))
    with atomic_path(path) as tmp:
        with _quiet_exporter():
            program.save(str(tmp), external_data=False)
        written = opset_of(tmp)
        if written != opset:
            raise SpnirError(f"{path}: not written: the exporter wrote opset {written}, not the {opset} asked for")
        checks = verify_onnx(tmp, reference, sizes, channels, dtype)
        limit = TOLERANCE["fp16" if half else "fp32"]
        worst = max(checks, key=lambda check: check.max_diff)
        if not worst.max_diff <= limit:
            raise SpnirError(
                f"{path}: not written: onnxruntime differs from PyTorch by {worst.max_diff:.3g} at "
                f"{worst.height}x{worst.width} (allowed {limit:g} in {'fp16' if half else 'fp32'})"
            )
        if dynamic and low > 1:
            verify_refusal(tmp, [(low - 1, low + 1), (low + 1, low - 1)], channels, dtype)
    return checks


SIZE_CHECK = "spnir: input height and width must be at least {} px"  # the check node's name, in runtime errors


def _refuse_smaller_inputs(model: Any, low: int, half: bool) -> None:
    """Put a check in front of the graph: an input side below ``low`` makes ``ConstantOfShape`` get a negative
    size, so runtimes stop there with an error naming the node (:data:`SIZE_CHECK`); otherwise it adds an
    exact zero to the input, which makes every other node wait for the check."""
    import numpy as np
    import onnx_ir as ir

    graph = model.graph
    image = graph.inputs[0]
    uses = list(image.uses())
    value_type = np.float16 if half else np.float32
    sides = ir.node("Shape", [image], {"start": 2, "end": 4})
    shortest = ir.node("ReduceMin", [sides.outputs[0]], {"keepdims": 1})
    minimum = ir.node("Constant", [], {"value": ir.tensor(np.array([low], dtype=np.int64))})
    margin = ir.node("Sub", [shortest.outputs[0], minimum.outputs[0]])
    check = ir.node("ConstantOfShape", [margin.outputs[0]], {"value": ir.tensor(np.zeros(1, dtype=value_type))},
                    name=SIZE_CHECK.format(low))
    zero = ir.node("ReduceSum", [check.outputs[0]], {"keepdims": 0})
    checked = ir.node("Add", [image, zero.outputs[0]])
    checked.outputs[0].name = "input_checked"
    checked.outputs[0].shape, checked.outputs[0].type = image.shape, image.type
    for user, index in uses:
        user.replace_input_with(index, checked.outputs[0])
    first = next(iter(graph))
    graph.insert_before(first, [sides, shortest, minimum, margin, check, zero, checked])


def verify_onnx(
    path: str | os.PathLike, model: nn.Module, sizes: list[tuple[int, int]], channels: int,
    dtype: torch.dtype = torch.float32,
) -> list[SizeCheck]:
    """Run the ONNX file at ``path`` in onnxruntime (CPU) and ``model`` in PyTorch (float32) on seeded random
    images of each size; the largest absolute difference per size."""
    import numpy as np
    import onnxruntime

    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    generator = torch.Generator().manual_seed(1)
    checks = []
    for height, width in sizes:
        image = torch.rand(1, channels, height, width, generator=generator).to(dtype)
        with torch.no_grad():
            expected = model(image.float()).numpy()
        try:
            (got,) = session.run(None, {name: image.numpy()})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise SpnirError(f"{path}: onnxruntime cannot run it on {height}x{width}: {_first_line(exc)}") from None
        if got.shape != expected.shape:
            raise SpnirError(f"{path}: onnxruntime gives {got.shape} on {height}x{width}, PyTorch {expected.shape}: "
                             "the export did not follow the input size")
        checks.append(SizeCheck(height, width, float(np.abs(got.astype(np.float32) - expected).max())))
    return checks


def verify_refusal(path: str | os.PathLike, sizes: list[tuple[int, int]], channels: int,
                   dtype: torch.dtype = torch.float32) -> None:
    """Check that onnxruntime refuses each size at the graph's size check (:func:`export_onnx`)."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4  # the refusal expected here is not logged to stderr
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    for height, width in sizes:
        image = torch.zeros(1, channels, height, width, dtype=dtype).numpy()
        try:
            session.run(None, {name: image})
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            if "spnir:" in str(exc):
                continue
            raise SpnirError(f"{path}: not written: on {height}x{width} onnxruntime fails elsewhere than at the "
                             f"size check: {_first_line(exc)}") from None
        raise SpnirError(f"{path}: not written: the graph accepts {height}x{width}, below its minimum side")


def export_safetensors(model: nn.Module, path: str | os.PathLike, half: bool = False) -> Path:
    """Write ``model``'s weights as a spnir ``.safetensors`` file whose metadata also says preset, scale,
    task and spnir version (:func:`describe_model`); ``half``: float16 weights. The file is then loaded back
    as a checkpoint is (:func:`verify_safetensors`): a tensor that differs from ``model``'s (with ``half``: from
    its weights rounded to float16) removes the file and raises :class:`SpnirError`."""
    if Path(path).suffix.lower() != ".safetensors":
        raise SpnirError(f"{path}: a safetensors export needs a file name ending in .safetensors")
    model = getattr(model, "_orig_mod", model)
    metadata = describe_model(model)
    written = save_model_checkpoint(copy.deepcopy(model).half() if half else model, path,
                                    metadata=prefixed(metadata))
    differ = verify_safetensors(written, model, half)
    if differ:
        written.unlink()
        raise SpnirError(f"{written}: removed: loading it back changed {len(differ)} tensors ({differ[0]}, ...)")
    return written


def verify_safetensors(path: str | os.PathLike, model: nn.Module, half: bool = False) -> list[str]:
    """Load the file at ``path`` as a model checkpoint is loaded (:func:`~spnir.archs.model_files.model_for_inference`)
    and compare its state with ``model``'s, exactly (with ``half``: with the floating-point tensors rounded to
    float16); the names of the tensors that differ."""
    loaded, _ = model_for_inference(path)
    own = model.state_dict()
    differ = []
    for name, value in loaded.state_dict().items():
        expected = own[name].detach().cpu()
        if expected.is_floating_point():
            expected = (expected.half() if half else expected).to(value.dtype)
        if not torch.equal(value, expected):
            differ.append(name)
    return differ


def _check_still_dynamic(program: Any, preset: str, low: int) -> None:
    """Refuse a graph whose height/width range was narrowed while tracing, or whose height and width became
    one symbol: it would silently hold for some sizes only."""
    from torch.utils._sympy.numbers import int_oo

    traced = program.exported_program
    image = next(n for n in traced.graph.nodes if n.op == "placeholder"
                 and n.name in traced.graph_signature.user_inputs)
    size_symbols = {dim.node.expr for dim in image.meta["val"].shape[2:] if isinstance(dim, torch.SymInt)}
    for symbol, bounds in traced.range_constraints.items():
        if symbol not in size_symbols:  # sizes computed inside the graph (a window clipped to the image)
            continue
        upper = MAX_SIZE if bounds.upper in (int_oo, float("inf")) else int(bounds.upper)
        if int(bounds.lower) > low or upper < MAX_SIZE:
            raise SpnirError(
                f"preset {preset!r}: its code branches on the input size ({symbol} limited to "
                f"{int(bounds.lower)}..{upper} while tracing), so a dynamic export would be wrong for other "
                "sizes; export with dynamic=False (a fixed size), or with other preset settings"
            )
    dims = program.model.graph.inputs[0].shape
    if str(dims[2]) == str(dims[3]):
        raise SpnirError(f"preset {preset!r}: height and width became one size while tracing; export with "
                         "dynamic=False")


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter prints its steps and warns about torchvision operators; keep the command's output ours."""
    logger = logging.getLogger("torch.onnx")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    summary = text.find("## Exception summary")
    if summary >= 0:
        text = text[summary + len("## Exception summary"):].strip()
    return (text.splitlines() or [type(exc).__name__])[0][:500]


def metadata_of(path: str | os.PathLike) -> dict[str, str]:
    """The ``spnir.*`` metadata of an exported ONNX or safetensors file, without the prefix."""
    if Path(path).suffix.lower() == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            items = (handle.metadata() or {}).items()
    else:
        import onnx

        items = ((p.key, p.value) for p in onnx.load(str(path), load_external_data=False).metadata_props)
    return {key.removeprefix("spnir."): value for key, value in items if key.startswith("spnir.")}
