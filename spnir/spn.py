"""Negative losses: SPN (history negatives) and the same loss with other negative sources.

    spn = SPN(model, weight=0.001)
    out = model(lq)
    loss = F.l1_loss(out, gt) + spn(lq, out)   # the signed, weighted negative term
    loss.backward(); opt.step()
    spn.step()                                   # advance the schedule, refresh negatives when due

:class:`NegativeLoss` holds a negative source (:mod:`spnir.negative_sources`), the feature extractor and
the form of the term; :class:`SPN` is that loss with the history source (its negative models).

Forms, with ``D_k(a, b) = mean |phi_k(a) - phi_k(b)|`` and ``j`` over the N negatives:

- ``difference`` (SPN): ``-weight * mean_j( sum_k w_k * D_k(out, neg_j) )``: the distance to the negatives
  is *subtracted*, as in the paper and the official code (the method's README writes ``+ lambda * L_neg``
  with ``L_neg`` already carrying the minus sign).
- ``ratio`` (CR of AECR-Net): ``weight * sum_k w_k * D_k(out, gt) / (mean_j D_k(out, neg_j) + 1e-7)``; the
  ground truth's and the negatives' features are detached, as in AECR-Net's ``ContrastLoss``.

Uncertainty (optional, ``uncertainty_weight > 0``): the per-pixel spread of the negatives and the current
output weights an extra L1 reconstruction term, see :func:`uncertainty_weights`.
"""
from __future__ import annotations

import contextlib
import functools
import operator
import os
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from spnir.device import AUTOCAST_DTYPES, autocast_dtype
from spnir.errors import SpnirError
from spnir.features import VGGFeatures
from spnir.negative_sources import NegativeSource
from spnir.negatives import FreshModel, NegativeBank
from spnir.ranks import mean_over_ranks

FeatureFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]

DEFAULT_LAYER_WEIGHTS = {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}
# CR (AECR-Net's ContrastLoss): VGG19 relu1_1 .. relu5_1 with weights 1/32, 1/16, 1/8, 1/4, 1.
CR_LAYER_WEIGHTS = {"relu1_1": 1 / 32, "relu2_1": 1 / 16, "relu3_1": 1 / 8, "relu4_1": 1 / 4, "relu5_1": 1.0}
FORMS = ("difference", "ratio")
RATIO_EPS = 1e-7
OPTIMIZER_STATE_KEY = "spnir"  # where an attached loss keeps its state_dict() inside optimizer.state_dict()

_DRIVING: weakref.WeakSet[torch.optim.Optimizer] = weakref.WeakSet()  # optimizers a loss is attached to


def make_features(features: str | nn.Module | FeatureFn, layer_names: Sequence[str],
                  vgg_weights: str | os.PathLike = "imagenet") -> nn.Module | FeatureFn:
    """``"vgg16"``/``"vgg19"`` -> a frozen :class:`VGGFeatures` computing ``layer_names``; a module or callable
    is checked (a ``VGGFeatures`` must compute every named layer) and frozen if it is a module."""
    if isinstance(features, str):
        return VGGFeatures(features, list(layer_names), vgg_weights=vgg_weights)
    if isinstance(features, VGGFeatures):
        unknown = [k for k in layer_names if k not in features.layers]
        if unknown:
            raise SpnirError(f"layer_weights names {unknown}, but the VGGFeatures computes only {features.layers}")
    elif not callable(features):
        raise SpnirError(f"features must be 'vgg16', 'vgg19', a VGGFeatures or a callable; got {features!r}")
    if isinstance(features, nn.Module):
        features.requires_grad_(False).eval()
    return features


def _autocast_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    if dtype is None or dtype is torch.float32:
        return None
    if isinstance(dtype, str):
        return autocast_dtype(dtype, "feature_dtype")
    if dtype not in AUTOCAST_DTYPES.values():
        raise SpnirError(f"feature_dtype must be torch.bfloat16 or torch.float16 (or None); got {dtype}")
    return dtype


@torch.no_grad()
def uncertainty_weights(out: torch.Tensor, negatives: Sequence[torch.Tensor], eps: float = 1e-3) -> torch.Tensor:
    """Per-pixel weights ``(N, 1, H, W)`` from the spread of the negatives and the current output (detached).

    ``u = mean_c std_s(x_s)`` over the samples ``s in {out, neg_1, ..., neg_N}`` (population std, per pixel
    and channel, then averaged over channels); ``w = (u + eps) / mean_{h,w}(u + eps)`` per image, so each
    image's weights average to 1 and agreeing samples (``u = 0``) give the plain L1.
    """
    samples = torch.stack([out.detach().float(), *(n.detach().float() for n in negatives)])
    spread = samples.std(dim=0, unbiased=False).mean(dim=1, keepdim=True) + eps
    return spread / spread.mean(dim=(2, 3), keepdim=True)


def check_options(layer_weights: Mapping[str, float] | Sequence[str], weight: float | str, form: str,
                  max_distance: float | None, target_ratio: float, uncertainty_weight: float,
                  uncertainty_eps: float = 1e-3, prefix: str = "") -> None:
    """The rules :class:`NegativeLoss` and :class:`SPN` enforce on their options, each error naming the option
    after ``prefix`` (a config passes ``"spn."``), so a config is checked before any work starts."""
    if not layer_weights:
        raise SpnirError(f"{prefix}layer_weights is empty: name at least one feature layer")
    if not 0.0 < target_ratio:
        raise SpnirError(f"{prefix}target_ratio = {target_ratio!r}: expected a number > 0")
    if weight != "auto" and (isinstance(weight, str) or float(weight) < 0):
        raise SpnirError(f"{prefix}weight = {weight!r}: expected a number >= 0 or 'auto'")
    if form not in FORMS:
        raise SpnirError(f"{prefix}form = {form!r} is not one of {list(FORMS)}")
    if max_distance is not None and max_distance <= 0:
        raise SpnirError(f"{prefix}max_distance = {max_distance!r}: expected a number > 0 (or null)")
    if max_distance is not None and form != "difference":
        raise SpnirError(f"{prefix}max_distance caps the distance of {prefix}form difference; {prefix}form {form} "
                         "takes no max_distance (the ratio form is bounded below by 0)")
    if uncertainty_weight < 0:
        raise SpnirError(f"{prefix}uncertainty_weight = {uncertainty_weight!r}: expected a number >= 0")
    if uncertainty_eps <= 0:
        raise SpnirError(f"{prefix}uncertainty_eps = {uncertainty_eps!r}: expected a number > 0")


class NegativeLoss(nn.Module):
    """A negative term: ``source`` gives negatives, ``features`` embeds them, ``form`` compares.

    Args:
        source: a negative source (:mod:`spnir.negative_sources`); :attr:`source`.
        weight: lambda, or ``"auto"``: scale the term to ``target_ratio`` times the reconstruction loss from
            running (detached) averages of both; then pass ``recon=`` to each call.
        layer_weights: feature name -> weight ``w_k``.
        features: ``"vgg16"``, ``"vgg19"``, a :class:`VGGFeatures`, or any callable mapping an image batch
            to a dict of named feature maps.
        form: ``"difference"`` (SPN) or ``"ratio"`` (CR; needs ``gt``).
        vgg_weights: for ``features="vgg16"/"vgg19"``: ``"imagenet"`` (torch hub cache), a path, or
            ``"random"`` (seeded random weights, only when asked for).
        max_distance: difference form only: each negative's distance is capped at ``max_distance`` (no push
            once that far).
        target_ratio, auto_momentum: target ratio and running-average momentum of ``weight="auto"``.
        uncertainty_weight: if > 0, adds ``uncertainty_weight * mean(w * |out - gt|)`` with ``w`` from
            :func:`uncertainty_weights` (needs ``gt``).
        uncertainty_eps: ``eps`` of :func:`uncertainty_weights`.
        feature_dtype: ``torch.bfloat16`` / ``torch.float16`` (or ``"bf16"`` / ``"fp16"``) runs the negatives and the
            feature extractor under autocast in that dtype (distances are still summed in float32); ``None``
            keeps the caller's precision. On CPUs with AVX512-BF16 this halves the cost of VGG.
    """

    features: FeatureFn  # outside the module tree (see __init__)

    def __init__(
        self,
        source: nn.Module,
        weight: float | str = 0.001,
        layer_weights: Mapping[str, float] | None = None,
        features: str | nn.Module | FeatureFn = "vgg16",
        form: str = "difference",
        *,
        vgg_weights: str | os.PathLike = "imagenet",
        max_distance: float | None = None,
        target_ratio: float = 0.05,
        auto_momentum: float = 0.99,
        uncertainty_weight: float = 0.0,
        uncertainty_eps: float = 1e-3,
        feature_dtype: torch.dtype | str | None = None,
    ) -> None:
        super().__init__()
        self.layer_weights = dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        check_options(self.layer_weights, weight, form, max_distance, target_ratio, uncertainty_weight,
                      uncertainty_eps)
        for method in ("negatives", "step"):
            if not callable(getattr(source, method, None)):
                raise SpnirError(f"source {type(source).__name__} has no {method}() method: expected a negative "
                                 "source from spnir.negative_sources")
        self.weight = weight if weight == "auto" else float(weight)
        self.form, self.max_distance = form, max_distance
        self.target_ratio, self.auto_momentum = float(target_ratio), float(auto_momentum)
        self.uncertainty_weight, self.uncertainty_eps = float(uncertainty_weight), float(uncertainty_eps)
        self.feature_dtype = _autocast_dtype(feature_dtype)
        self._avg_recon: float | torch.Tensor | None = None  # float64 tensors while training, floats when loaded
        self._avg_distance: float | torch.Tensor | None = None
        # Kept outside the module tree so state_dict() holds the source's state only; _apply moves it with us.
        self.__dict__["features"] = make_features(features, list(self.layer_weights), vgg_weights)
        self.add_module("negatives", source)  # the name of its state in every saved loss: negatives.*
        self.last: dict[str, torch.Tensor] = {}
        self._optimizer_hooks: list[Any] = []  # handles of attach()
        self._driver: weakref.ref[torch.optim.Optimizer] | None = None

    @property
    def source(self) -> NegativeSource:
        """The negative source; its state is under ``negatives.`` in :meth:`state_dict`."""
        return cast(NegativeSource, self.get_submodule("negatives"))  # checked in __init__

    @property
    def feature_space(self) -> str:
        """Which features the distance is measured in (ImageNet VGG, random VGG, or a custom callable)."""
        return getattr(self.features, "feature_space", f"custom features {type(self.features).__name__}")

    def _apply(self, fn, recurse: bool = True):
        super()._apply(fn, recurse)
        if isinstance(self.features, nn.Module):
            self.features._apply(fn, recurse)
        return self

    def _features(self, x: torch.Tensor) -> Mapping[str, torch.Tensor]:
        feats = self.features(x)
        missing = [k for k in self.layer_weights if k not in feats]
        if missing:
            raise SpnirError(f"layer_weights names {missing}, but the features give only {list(feats)}")
        return feats

    def layer_distances(self, out: torch.Tensor, others: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """``D_k(out, other_j)`` for each layer ``k``: a vector of length ``len(others)`` per layer name.

        Gradients flow through ``out`` only; ``others`` are embedded without autograd.
        """
        for i, other in enumerate(others):
            if other.shape != out.shape:
                raise SpnirError(f"negative {i} has shape {tuple(other.shape)}, the output {tuple(out.shape)}")
        with self._autocast(out):
            feats_out = self._features(out)
            with torch.no_grad():
                feats_other = self._features(torch.cat([o.detach() for o in others]).to(out.dtype))
        count = len(others)
        distances = {}
        for name in self.layer_weights:
            fo = feats_out[name].float()
            fn = feats_other[name].float().reshape(count, *fo.shape)
            # autograd keeps each pair's difference for backward; a chunked single-pass L1 without it was
            # measured and saved under 2% of a step (bench/README.md), so the plain form stays
            distances[name] = torch.stack([F.l1_loss(fo, fn[j]) for j in range(count)])
        return distances

    def distances(self, out: torch.Tensor, negatives: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_k w_k * D_k(out, neg_j)`` for each negative ``j`` (a vector of length N)."""
        per_negative = out.new_zeros(len(negatives), dtype=torch.float32)
        for name, d in self.layer_distances(out, negatives).items():
            per_negative = per_negative + self.layer_weights[name] * d
        return per_negative

    def forward(
        self,
        lq: torch.Tensor,
        out: torch.Tensor,
        gt: torch.Tensor | None = None,
        recon: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The signed, weighted negative term for this batch (add it to the loss).

        ``gt`` is needed by the ratio form, the uncertainty term, the degraded-gt source and the adaptive
        refresh; ``recon`` (the reconstruction loss) by ``weight="auto"``.
        """
        with self._autocast(lq):
            negatives = self.source.negatives(lq, out, gt)
        if not negatives:
            raise SpnirError(f"the {type(self.source).__name__} source gave no negatives")
        stats: dict[str, torch.Tensor] = {}
        if self.form == "difference":
            per_negative = self.distances(out, negatives)
            if self.max_distance is not None:
                per_negative = per_negative.clamp(max=self.max_distance)
            value = per_negative.mean()
            stats["neg_distance"] = value.detach()
            sign = -1.0
        else:
            if gt is None:
                raise SpnirError("the ratio form compares with the ground truth: pass gt, as in loss(lq, out, gt=gt)")
            d = self.layer_distances(out, [gt, *negatives])
            value = _total(w * d[k][0] / (d[k][1:].mean() + RATIO_EPS) for k, w in self.layer_weights.items())
            stats["neg_distance"] = _total(w * d[k][1:].mean() for k, w in self.layer_weights.items()).detach()
            stats["neg_ratio"] = value.detach()
            sign = 1.0
        weight = self._effective_weight(value, recon)
        if torch.is_tensor(weight):
            term = (sign * weight).float() * value
            stats["neg_weight"] = weight.detach()
        else:
            term = sign * weight * value
            stats["neg_weight"] = torch.tensor(weight, dtype=torch.float64)
        stats["neg_term"] = term.detach()
        if self.uncertainty_weight > 0:
            if gt is None:
                raise SpnirError("the uncertainty-weighted reconstruction needs the ground truth: pass gt")
            w = uncertainty_weights(out, negatives, self.uncertainty_eps)
            weighted = ((out.float() - gt.float()).abs() * w).mean()
            term = term + self.uncertainty_weight * weighted
            stats["unc_recon"] = weighted.detach()
            stats["unc_max_weight"] = w.max()
        self.last = stats
        return term

    def _autocast(self, like: torch.Tensor) -> contextlib.AbstractContextManager:
        if self.feature_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(like.device.type, dtype=self.feature_dtype)

    def _effective_weight(self, value: torch.Tensor, recon: torch.Tensor | None) -> float | torch.Tensor:
        """lambda, or for ``weight="auto"`` a float64 tensor on the device: the running averages stay there, so
        the term needs no device-to-host transfer."""
        if not isinstance(self.weight, str):  # a fixed lambda; the only string is "auto"
            return self.weight
        if recon is None:
            raise SpnirError("weight='auto' needs the reconstruction loss: call spn(lq, out, recon=loss)")
        r, d = mean_over_ranks(torch.stack([recon.detach().float(), value.detach().float()])).double().unbind()
        m = self.auto_momentum
        self._avg_recon = r if self._avg_recon is None else m * _on(self._avg_recon, r) + (1 - m) * r
        self._avg_distance = d if self._avg_distance is None else m * _on(self._avg_distance, d) + (1 - m) * d
        return self.target_ratio * self._avg_recon.abs() / self._avg_distance.clamp(min=1e-12)

    def stats(self) -> dict[str, float]:
        """The last call's distance, effective weight and term (and ratio, uncertainty term), as floats."""
        return {k: float(v) for k, v in self.last.items()}

    def step(self, **inputs: float) -> list[int]:
        """Call once after each optimiser step: advances the source (refreshes history negatives when due).

        ``inputs``: :meth:`step_inputs` as floats, when the caller fetched them from the device itself (with
        its other values, in one transfer); else the source reads them. An :meth:`attach`-ed loss is stepped
        by its optimizer instead."""
        if self._optimizer_hooks:
            raise SpnirError("this loss is attached to an optimizer, which steps it after each optimizer.step(); "
                             "remove the spn.step() call (or spn.detach() to step it by hand)")
        return self.source.step(**inputs)

    def step_inputs(self) -> dict[str, torch.Tensor]:
        """The device values the source's next :meth:`step` decides on, by keyword (the adaptive refresh's
        batch residual); empty for most sources."""
        inputs = getattr(self.source, "step_inputs", None)
        return inputs() if callable(inputs) else {}

    def attach(self, optimizer: torch.optim.Optimizer) -> NegativeLoss:
        """Let ``optimizer`` drive this loss; returns ``self``. A loop then needs only the loss line.

        - After each ``optimizer.step()`` that updates the weights, :meth:`step` runs (with the adaptive
          refresh's residual read from the device). A step a ``torch.amp.GradScaler`` skips is no step: the
          scaler does not call ``step()`` of most optimizers then, and for those that unscale themselves
          (``fused=True``) it passes ``found_inf``, read here (one device-to-host transfer per step).
          Gradient accumulation advances once per optimizer step.
        - ``optimizer.state_dict()`` carries :meth:`state_dict` (negatives, schedule, ``weight="auto"``
          averages) under the key ``"spnir"``, and ``optimizer.load_state_dict()`` loads it back: saving and
          resuming the optimizer saves and resumes the negatives (``torch.load(weights_only=True)`` reads it).

        One loss per optimizer, one optimizer per loss; :meth:`detach` undoes it.
        """
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise SpnirError(f"attach needs a torch.optim.Optimizer; got {type(optimizer).__name__}")
        if self._optimizer_hooks:
            raise SpnirError("this loss is already attached to an optimizer; spn.detach() first")
        if optimizer in _DRIVING:
            raise SpnirError(f"this {type(optimizer).__name__} already drives a negative loss; attach one loss per "
                             "optimizer")
        target = getattr(self.source, "target", None)
        if isinstance(target, nn.Module):
            optimized = {id(p) for group in optimizer.param_groups for p in group["params"]}
            if not any(id(p) in optimized for p in target.parameters()):
                raise SpnirError(f"the {type(optimizer).__name__} updates none of the parameters of the model "
                                 "whose negatives this loss keeps; attach the optimizer of that model")
        self._optimizer_hooks = [
            optimizer.register_step_post_hook(self._after_optimizer_step),
            optimizer.register_state_dict_post_hook(self._into_optimizer_state),
            optimizer.register_load_state_dict_pre_hook(self._from_optimizer_state),
        ]
        self._driver = weakref.ref(optimizer)
        _DRIVING.add(optimizer)
        return self

    def detach(self) -> NegativeLoss:
        """Undo :meth:`attach`: the optimizer no longer steps, saves nor loads this loss; returns ``self``."""
        for handle in self._optimizer_hooks:
            handle.remove()
        self._optimizer_hooks = []
        optimizer = self._driver() if self._driver is not None else None
        if optimizer is not None:
            _DRIVING.discard(optimizer)
        self._driver = None
        return self

    def _after_optimizer_step(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        found_inf = getattr(optimizer, "found_inf", None)  # set by GradScaler.step for fused optimizers
        if found_inf is not None and bool(found_inf):
            return
        self.source.step()

    def _into_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        state[OPTIMIZER_STATE_KEY] = self.state_dict()

    def _from_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        # ``state`` is the optimizer's own shallow copy of what the caller passed
        if OPTIMIZER_STATE_KEY not in state:
            raise SpnirError(f"the {type(optimizer).__name__} state has no '{OPTIMIZER_STATE_KEY}' entry: it was saved "
                             "without an attached negative loss; load it before spn.attach(optimizer) to keep this "
                             "loss as it is")
        try:
            self.load_state_dict(state.pop(OPTIMIZER_STATE_KEY))
        except RuntimeError as exc:  # torch's missing / unexpected keys, over several lines
            raise SpnirError(f"the {type(optimizer).__name__} state's '{OPTIMIZER_STATE_KEY}' entry does not fit "
                             f"this {type(self).__name__}: {' '.join(str(exc).split())}") from None

    def get_extra_state(self) -> dict[str, Any]:
        return {"avg_recon": _host(self._avg_recon), "avg_distance": _host(self._avg_distance)}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._avg_recon = state["avg_recon"]
        self._avg_distance = state["avg_distance"]


def _total(terms: Iterable[torch.Tensor]) -> torch.Tensor:
    """``t1 + t2 + ...`` left to right, as ``sum`` adds them but without its start value ``0`` (which types the
    result ``Tensor | int``); never empty here: :func:`check_options` refuses empty ``layer_weights``."""
    return functools.reduce(operator.add, terms)


def _on(average: float | torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A running average (a float after loading a checkpoint) as a float64 tensor beside ``like``."""
    return torch.as_tensor(average, dtype=torch.float64, device=like.device)


def _host(average: float | torch.Tensor | None) -> float | None:
    return float(average) if torch.is_tensor(average) else average


class SPN(NegativeLoss):
    """The negative term of SPN, its negative models and their schedule: :class:`NegativeLoss` whose source
    is a :class:`~spnir.negatives.NegativeBank`, ``spn.negatives``.

    Args:
        model: the network being trained (DDP/compile wrappers are looked through).
        weight, layer_weights, features, vgg_weights, max_distance, target_ratio, auto_momentum, form,
            uncertainty_weight, uncertainty_eps, feature_dtype: see :class:`NegativeLoss`.
        periods, decays, init_decay, fresh_model, adaptive_threshold, adaptive_decay: the negatives'
            schedule, see :class:`~spnir.negatives.NegativeBank`.
    """

    negatives: NegativeBank

    def __init__(
        self,
        model: nn.Module,
        weight: float | str = 0.001,
        layer_weights: Mapping[str, float] | None = None,
        features: str | nn.Module | FeatureFn = "vgg16",
        periods: Sequence[int] = (100,),
        decays: Sequence[float] = (0.1,),
        init_decay: float = 0.0,
        *,
        vgg_weights: str | os.PathLike = "imagenet",
        fresh_model: FreshModel | None = None,
        adaptive_threshold: float | None = None,
        adaptive_decay: float = 0.001,
        max_distance: float | None = None,
        target_ratio: float = 0.05,
        auto_momentum: float = 0.99,
        form: str = "difference",
        uncertainty_weight: float = 0.0,
        uncertainty_eps: float = 1e-3,
        feature_dtype: torch.dtype | str | None = None,
    ) -> None:
        names = list(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        check_options(names, weight, form, max_distance, target_ratio, uncertainty_weight, uncertainty_eps)
        # features first, then the negatives: the order of their global RNG draws, which seeded runs rely on
        features = make_features(features, names, vgg_weights)
        bank = NegativeBank(model, periods, decays, init_decay, fresh_model, adaptive_threshold, adaptive_decay)
        super().__init__(bank, weight, layer_weights, features, form, vgg_weights=vgg_weights,
                         max_distance=max_distance, target_ratio=target_ratio, auto_momentum=auto_momentum,
                         uncertainty_weight=uncertainty_weight, uncertainty_eps=uncertainty_eps,
                         feature_dtype=feature_dtype)
