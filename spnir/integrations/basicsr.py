"""SPN inside BasicSR and NAFNet's BasicSR fork: model classes named and configured as the SPN authors' fork.

    python -m spnir.integrations.basicsr -opt options/train_EDSR_SPN.yml [--auto_resume] [--force_yml ...]

registers the classes of :data:`CLASSES` whose base class the installed ``basicsr`` has, then runs that
``basicsr``'s own loop (BasicSR's ``train_pipeline`` with the current folder as root, so ``experiments/`` lands
where ``--auto_resume`` looks; NAFNet's ``basicsr.train.main``). ``basicsr`` is imported only here and is not
a dependency of spnir. In a script of your own, call :func:`register` before BasicSR builds the model.

``model_type`` picks the class: ``SRNegModel`` / ``SRNegModel_Multi`` (BasicSR's ``SRModel`` with one / several
negatives), ``SwinIRNegModel`` / ``SwinIRNegModel_Multi`` (its ``SwinIRModel``), as the fork's classes of these
names; ``ImageRestorationNegModel`` / ``ImageRestorationNegModel_Multi`` (NAFNet's ``ImageRestorationModel``).
The negative term is read from ``train:`` as the fork spells it (:func:`negative_settings`): ``perceptual_opt``
(``layer_weights``, ``vgg_type``, ``use_input_norm``, ``range_norm``, ``perceptual_weight``; here it is the
distance *to the negatives*, subtracted, not a perceptual loss towards the ground truth), ``neg_iter``,
``neg_decay``, ``neg_start``, and ``use_grad_clip`` as the fork's ``SRNegModel`` clips. One key is spnir's own:
``perceptual_opt.vgg_weights`` (``imagenet``: torchvision's file in the torch hub cache, where torchvision puts
it; a path; or ``random``). Everything else is the base class's: its pixel loss, optimizer, scheduler, EMA,
validation.

The negatives advance after each optimizer step and ride in the optimizer's state dict (:meth:`SPN.attach`), so
BasicSR's ``training_states/N.state`` holds them and ``resume_training`` restores them.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import importlib.util
import itertools
import logging
import os
import sys
import types
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import nn

from spnir.errors import Param, SpnirError
from spnir.features import VGGFeatures
from spnir.spn import DEFAULT_LAYER_WEIGHTS, SPN
from spnir.train.basicsr import MODEL_TYPES, ModelType, map_negative_loss, map_negatives
from spnir.weights.vgg import resolve_feature_space

MODULE = "spnir.integrations.basicsr"  # the module the registered classes name, also when this file runs as __main__
Options = dict[str, Any]
NetworkBuilder = Callable[[Options], nn.Module]

_NAFNET_BASE = MODEL_TYPES["ImageRestorationModel"]
# model_type -> (module of the base class, base class, what the options mean: spnir.train.basicsr.ModelType)
CLASSES: dict[str, tuple[str, str, ModelType]] = {
    "SRNegModel": ("basicsr.models.sr_model", "SRModel", MODEL_TYPES["SRNegModel"]),
    "SRNegModel_Multi": ("basicsr.models.sr_model", "SRModel", MODEL_TYPES["SRNegModel_Multi"]),
    "SwinIRNegModel": ("basicsr.models.swinir_model", "SwinIRModel", MODEL_TYPES["SwinIRNegModel"]),
    "SwinIRNegModel_Multi": ("basicsr.models.swinir_model", "SwinIRModel", MODEL_TYPES["SwinIRNegModel_Multi"]),
    # NAFNet's class with the fork's two readings of neg_iter (NAFNet's own clipping stays the base class's)
    "ImageRestorationNegModel": ("basicsr.models.image_restoration_model", "ImageRestorationModel",
                                 dataclasses.replace(_NAFNET_BASE, negatives="single", neg_start=0.999)),
    "ImageRestorationNegModel_Multi": ("basicsr.models.image_restoration_model", "ImageRestorationModel",
                                       dataclasses.replace(_NAFNET_BASE, negatives="multi", neg_start=0.01)),
}
ASK_RANDOM_VGG = Param("vgg_weights", python="train.perceptual_opt.vgg_weights: random in the option file")
INSTALL_HINT = ("install BasicSR from its repository (pip install --no-deps -e PATH, or PYTHONPATH=PATH), or put "
                "NAFNet's repository on PYTHONPATH; PyPI's basicsr 1.4.2 does not import with torchvision >= 0.17")


def negative_settings(opt: Mapping[str, Any], kind: ModelType, notes: list[str]) -> Options | None:
    """The negative term and schedule an option dict asks for, as ``kind``'s class reads them: keyword
    arguments of :class:`VGGFeatures` and :class:`SPN` (``features``, ``layer_weights``, ``input_norm``,
    ``range_norm``, ``vgg_weights``, ``weight``, ``periods``, ``decays``, ``init_decay``), or None when
    ``train.perceptual_opt`` is absent (the fork then computes no negative term). What the keys became is
    appended to ``notes``; a key that would change the training and has no counterpart is refused."""
    train = dict(opt.get("train") or {})
    refused: list[str] = []
    if (opt.get("path_neg") or {}).get("pretrain_network_g_neg") is not None:
        refused.append("path_neg.pretrain_network_g_neg (the negatives are built from network_g)")
    if opt.get("network_g_net") is not None:
        refused.append("network_g_net (a negative of another architecture)")
    perceptual = dict(train.pop("perceptual_opt", None) or {})
    vgg_weights = perceptual.pop("vgg_weights", "imagenet")
    spn = map_negative_loss(perceptual, refused) if perceptual else None
    map_negatives(train, kind, spn, notes, refused)
    if refused:
        raise SpnirError(f"model_type {opt.get('model_type')}: options it cannot honour: " + "; ".join(refused))
    if spn is None:
        return None
    spn.pop("enabled")
    spn["vgg_weights"] = vgg_weights
    return spn


def fresh_networks(build_network: NetworkBuilder, network_opt: Mapping[str, Any], seed: int) -> Callable[[], nn.Module]:
    """Factory of the negatives' fresh networks (``neg_start``): call ``k`` builds ``network_opt`` with BasicSR's
    builder under ``torch.manual_seed(seed + 1 + k)`` on a forked RNG (the same fresh weights when a run is
    resumed, the global RNG untouched)."""
    calls = itertools.count()

    def fresh() -> nn.Module:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed + 1 + next(calls))
            return build_network(copy.deepcopy(dict(network_opt)))

    return fresh


def build_spn(net: nn.Module, settings: Mapping[str, Any], fresh_model: Callable[[], nn.Module], seed: int) -> SPN:
    """The :class:`SPN` of :func:`negative_settings` for ``net``, on ``net``'s device."""
    layer_weights = dict(settings.get("layer_weights") or DEFAULT_LAYER_WEIGHTS)
    resolve_feature_space(settings["features"], settings["vgg_weights"], ask_random=ASK_RANDOM_VGG)
    features = VGGFeatures(settings["features"], list(layer_weights), vgg_weights=settings["vgg_weights"],
                           input_norm=settings["input_norm"], range_norm=settings["range_norm"], seed=seed)
    spn = SPN(net, weight=settings["weight"], layer_weights=layer_weights, features=features,
              periods=settings["periods"], decays=settings["decays"], init_decay=settings["init_decay"],
              fresh_model=fresh_model)
    return spn.to(next(net.parameters()).device)


class NegativeTerm:
    """SPN's term where a BasicSR model calls its perceptual loss: ``(output, gt) -> (term, None)``; the term is
    already signed (the distance to the negatives, subtracted), so the base class adds it to its total."""

    def __init__(self, spn: SPN, inputs: Callable[[], torch.Tensor]) -> None:
        self.spn, self.inputs = spn, inputs

    def __call__(self, output: torch.Tensor, gt: torch.Tensor) -> tuple[torch.Tensor, None]:
        return self.spn(self.inputs(), output, gt), None


def _clip_gradients(net: nn.Module, max_norm: float) -> Callable[..., None]:
    """An optimizer step pre-hook clipping ``net``'s gradient norm to ``max_norm``."""
    params = [p for p in net.parameters() if p.requires_grad]

    def clip(*_: Any) -> None:
        nn.utils.clip_grad_norm_(params, max_norm)

    return clip


def negative_model_class(name: str, base: type[Any], kind: ModelType, build_network: NetworkBuilder) -> type:
    """``base`` (a BasicSR model class: ``net_g``, ``optimizer_g``, ``cri_perceptual`` called as
    ``(output, gt)``, ``optimize_parameters`` that steps ``optimizer_g`` once) with SPN, named ``name``."""

    def init_training_settings(self: Any) -> None:
        notes: list[str] = []
        settings = negative_settings(self.opt, kind, notes)
        self.opt["train"].pop("perceptual_opt", None)  # the negative term here, not a loss towards the ground truth
        base.init_training_settings(self)
        logger = logging.getLogger("basicsr")
        for note in notes:
            logger.info(f"{name}: {note}")
        self.spn = None
        if settings is None:
            logger.warning(f"{name}: no train.perceptual_opt, so no negative term (as the fork's class)")
            return
        seed = int(self.opt.get("manual_seed") or 0)
        self.spn = build_spn(self.net_g, settings, fresh_networks(build_network, self.opt["network_g"], seed), seed)
        self.cri_perceptual = NegativeTerm(self.spn, lambda: self.lq)
        max_norm = self.opt["train"].get("use_grad_clip")
        if kind.clip == "norm" and max_norm:  # the fork's class clips before its step; BasicSR's SRModel never does
            self.optimizer_g.register_step_pre_hook(_clip_gradients(self.net_g, float(max_norm)))
        self.spn.attach(self.optimizer_g)
        logger.info(f"{name}: SPN with {len(self.spn.source)} negative(s), periods {list(settings['periods'])}, "
                    f"decays {list(settings['decays'])}, weight {settings['weight']}; {self.spn.feature_space}")

    def optimize_parameters(self: Any, current_iter: int, *args: Any) -> Any:
        result = base.optimize_parameters(self, current_iter, *args)
        if "l_percep" in self.log_dict:
            self.log_dict["l_neg"] = self.log_dict.pop("l_percep")
        return result

    return type(name, (base,), {"__module__": MODULE, "__doc__": f"{base.__name__} with SPN ({kind.source}).",
                                "init_training_settings": init_training_settings,
                                "optimize_parameters": optimize_parameters})


def _import_basicsr() -> types.ModuleType:
    try:
        return importlib.import_module("basicsr")
    except ImportError as exc:
        raise SpnirError(f"basicsr could not be imported ({exc}): {INSTALL_HINT}") from None


def register() -> list[str]:
    """Register the classes of :data:`CLASSES` whose base class the installed ``basicsr`` has (BasicSR's
    ``MODEL_REGISTRY``; NAFNet's fork, which has no registry: its model module list); returns their names.
    Calling it again is harmless; a name that ``basicsr`` already has for a class of its own is refused."""
    basicsr = _import_basicsr()
    nafnet = importlib.util.find_spec("basicsr.utils.registry") is None
    build_network = importlib.import_module("basicsr.models.archs").define_network if nafnet \
        else importlib.import_module("basicsr.archs").build_network
    classes = {name: negative_model_class(name, getattr(importlib.import_module(module), base), kind, build_network)
               for name, (module, base, kind) in CLASSES.items() if importlib.util.find_spec(module) is not None}
    if not classes:
        raise SpnirError(f"the basicsr at {', '.join(basicsr.__path__)} has none of the base classes "
                         f"{sorted({c[1] for c in CLASSES.values()})}")
    if nafnet:
        _register_nafnet(classes)
    else:
        _register_basicsr(classes)
    return list(classes)


def _register_basicsr(classes: Mapping[str, type]) -> None:
    registry = importlib.import_module("basicsr.utils.registry").MODEL_REGISTRY
    for name, cls in classes.items():
        if name in registry:
            if registry.get(name).__module__ == MODULE:
                continue
            raise SpnirError(f"basicsr already registers a model {name} of its own "
                             f"({registry.get(name).__module__}): is this the SPN authors' fork? Run its own "
                             "basicsr/train.py, or use BasicSR master with spnir's classes")
        registry.register(cls)


def _register_nafnet(classes: Mapping[str, type]) -> None:
    models = importlib.import_module("basicsr.models")
    for module in models._model_modules:
        if getattr(module, "__name__", None) == MODULE:
            return
        taken = [name for name in classes if hasattr(module, name)]
        if taken:
            raise SpnirError(f"basicsr's {module.__name__} already has {taken}")
    models._model_modules.append(types.SimpleNamespace(__name__=MODULE, **classes))


def load_resume_state_on_cpu(opt: Options) -> dict[str, Any] | None:
    """BasicSR's ``load_resume_state`` with the state mapped to the CPU: BasicSR's own maps it to the current
    CUDA device and fails on a machine without one. Same folder scan for ``--auto_resume``."""
    path = None if opt.get("auto_resume") else opt["path"].get("resume_state")
    folder = os.path.join("experiments", opt["name"], "training_states")
    if opt.get("auto_resume") and os.path.isdir(folder):
        states = [int(f[:-len(".state")]) for f in os.listdir(folder) if f.endswith(".state")]
        if states:
            path = opt["path"]["resume_state"] = os.path.join(folder, f"{max(states)}.state")
    if not path:
        return None
    state = torch.load(path, map_location="cpu", weights_only=True)
    importlib.import_module("basicsr.utils").check_resume(opt, state["iter"])
    return state


def main() -> int:
    """``python -m spnir.integrations.basicsr -opt X.yml ...``: BasicSR's command line, SPN's classes registered."""
    try:
        register()
        train: Any = importlib.import_module("basicsr.train")  # BasicSR ships no type information
        if hasattr(train, "train_pipeline"):
            if not torch.cuda.is_available():
                train.load_resume_state = load_resume_state_on_cpu
            train.train_pipeline(os.getcwd())
        else:
            train.main()
    except SpnirError as exc:
        print(f"spnir.integrations.basicsr: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
