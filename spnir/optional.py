"""Optional dependencies and the extras that bring them.

``pip install spnir`` installs the core: torch, numpy and safetensors, all that ``from spnir import SPN`` and the
loss need. The toolkit (``spnir train/eval/restore/study/demo/weights``: YAML configs, images, progress bars,
TensorBoard, plots, statistics, scikit-image's photographs) comes with ``spnir[toolkit]``; ONNX export with
``spnir[export]``, experiment tracking with ``spnir[wandb]``, the Lightning callback with ``spnir[lightning]``.
A module that needs one of the heavy ones (TensorBoard, matplotlib, scipy, scikit-image, wandb, lightning) imports
it through :func:`require`, so a missing one is a one-line :class:`~spnir.errors.SpnirError` naming the command
that installs it; the ``spnir`` command turns any other missing package of :data:`EXTRAS` (pillow, pyyaml,
tqdm, imported at the top of the toolkit's modules) into the same line (:func:`missing_package`).
"""
from __future__ import annotations

import importlib
from types import ModuleType

from spnir.errors import SpnirError

# import name -> (distribution on PyPI, spnir extra that installs it)
EXTRAS: dict[str, tuple[str, str]] = {
    "PIL": ("pillow", "toolkit"),
    "yaml": ("pyyaml", "toolkit"),
    "tqdm": ("tqdm", "toolkit"),
    "tensorboard": ("tensorboard", "toolkit"),
    "matplotlib": ("matplotlib", "toolkit"),
    "skimage": ("scikit-image", "toolkit"),
    "scipy": ("scipy", "toolkit"),
    "onnx": ("onnx", "export"),
    "onnxscript": ("onnxscript", "export"),
    "onnxruntime": ("onnxruntime", "export"),
    "wandb": ("wandb", "wandb"),
    "lightning": ("lightning", "lightning"),
}


def install_hint(module: str) -> str:
    """``pip install 'spnir[EXTRA]'`` for the extra that provides ``module`` (an import name in :data:`EXTRAS`)."""
    return f"pip install 'spnir[{EXTRAS[module.split('.')[0]][1]}]'"


def missing_package(exc: ModuleNotFoundError, needed_for: str) -> SpnirError | None:
    """The one-line error for ``exc`` when the missing module is one of :data:`EXTRAS`; None otherwise."""
    root = (exc.name or "").split(".")[0]
    if root not in EXTRAS:
        return None
    return SpnirError(f"{needed_for} needs {EXTRAS[root][0]}, which is not installed: {install_hint(root)}")


def require(module: str, needed_for: str) -> ModuleType:
    """Import ``module`` (``"matplotlib.pyplot"``, ...); when its package (or an optional package it imports) is
    not installed, a :class:`SpnirError` such as ``log.wandb needs wandb, which is not installed: pip install
    'spnir[wandb]'``."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        error = missing_package(exc, needed_for)
        if error is None:
            raise
        raise error from None
