"""The paper's architectures as presets: ``create_model(name, scale=None, **overrides)``, ``list_models()``.

One file per family; each registers its presets and its checkpoint filter on import.
"""
from __future__ import annotations

import importlib

from spnir.archs.model_files import load_checkpoint, model_from_checkpoint, save_model_checkpoint
from spnir.archs.registry import Preset, create_model, get_preset, list_models, register_model

# Families, imported below so that their presets register. Add a family here when its file exists.
FAMILY_MODULES: tuple[str, ...] = ("edsr", "swinir", "nafnet", "ffanet", "dehazeformer", "idt", "imdn", "dncnn")

for _module in FAMILY_MODULES:
    importlib.import_module(f"spnir.archs.{_module}")

__all__ = [
    "Preset",
    "create_model",
    "get_preset",
    "list_models",
    "load_checkpoint",
    "model_from_checkpoint",
    "register_model",
    "save_model_checkpoint",
]
