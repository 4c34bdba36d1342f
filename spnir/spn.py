"""SPN: the self-prior guided negative loss as one object any training loop can hold.

    spn = SPN(model, weight=0.001)
    out = model(lq)
    loss = F.l1_loss(out, gt) + spn(lq, out)   # the signed, weighted negative term
    loss.backward(); opt.step()
    spn.step()                                   # advance the schedule, refresh negatives when due

The term is ``-weight * mean_j( sum_k w_k * L1(phi_k(out), phi_k(neg_j)) )``: the distance between the
output and the negatives' outputs is *subtracted*, as in the paper and the official code (the method's
README writes ``+ lambda * L_neg`` with ``L_neg`` already carrying the minus sign).
"""
from __future__ import annotations

import os
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from spnir.errors import SpnirError
from spnir.features import VGGFeatures
from spnir.negatives import FreshModel, NegativeBank

FeatureFn = Callable[[torch.Tensor], Mapping[str, torch.Tensor]]

DEFAULT_LAYER_WEIGHTS = {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}


class SPN(nn.Module):
    """The negative term of SPN, its negative models and their schedule.

    Args:
        model: the network being trained (DDP/compile wrappers are looked through).
        weight: lambda, or ``"auto"``: scale the term to ``auto_ratio`` times the reconstruction loss
            from running (detached) averages of both; then pass ``recon=`` to each call.
        layer_weights: feature name -> weight ``w_k``.
        features: ``"vgg16"``, ``"vgg19"``, a :class:`VGGFeatures`, or any callable mapping an image batch
            to a dict of named feature maps.
        periods, decays, init_decay, fresh_model, adaptive_threshold, adaptive_decay: the negatives'
            schedule, see :class:`~spnir.negatives.NegativeBank`.
        vgg_weights: for ``features="vgg16"/"vgg19"``: ``"imagenet"`` (torch hub cache), a path, or
            ``"random"`` (seeded random weights, only when asked for).
        bound: if set, each negative's distance is capped at ``bound`` (a hinge: no push once that far).
        auto_ratio, auto_momentum: target ratio and running-average momentum of ``weight="auto"``.
    """

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
        bound: float | None = None,
        auto_ratio: float = 0.05,
        auto_momentum: float = 0.99,
    ) -> None:
        super().__init__()
        self.layer_weights = dict(DEFAULT_LAYER_WEIGHTS if layer_weights is None else layer_weights)
        if not self.layer_weights:
            raise SpnirError("layer_weights is empty: name at least one feature layer")
        if weight == "auto":
            if not 0.0 < auto_ratio:
                raise SpnirError(f"auto_ratio must be > 0; got {auto_ratio}")
        elif isinstance(weight, str) or float(weight) < 0:
            raise SpnirError(f"weight must be a number >= 0 or 'auto'; got {weight!r}")
        if bound is not None and bound <= 0:
            raise SpnirError(f"bound must be > 0 (or None); got {bound}")
        self.weight = weight if weight == "auto" else float(weight)
        self.bound = bound
        self.auto_ratio, self.auto_momentum = float(auto_ratio), float(auto_momentum)
        self._avg_recon: float | None = None
        self._avg_distance: float | None = None
        # Kept outside the module tree so state_dict() holds negatives only; _apply moves it with us.
        self.__dict__["features"] = self._make_features(features, vgg_weights)
        self.negatives = NegativeBank(
            model, periods, decays, init_decay, fresh_model, adaptive_threshold, adaptive_decay
        )
        self.last: dict[str, torch.Tensor] = {}

    def _make_features(self, features: str | nn.Module | FeatureFn, vgg_weights: str | os.PathLike):
        if isinstance(features, str):
            return VGGFeatures(features, list(self.layer_weights), weights=vgg_weights)
        if isinstance(features, VGGFeatures):
            unknown = [k for k in self.layer_weights if k not in features.layers]
            if unknown:
                raise SpnirError(
                    f"layer_weights names {unknown}, but the VGGFeatures computes only {features.layers}"
                )
        elif not callable(features):
            raise SpnirError(f"features must be 'vgg16', 'vgg19', a VGGFeatures or a callable; got {features!r}")
        if isinstance(features, nn.Module):
            features.requires_grad_(False).eval()
        return features

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

    def distances(self, out: torch.Tensor, negatives: Sequence[torch.Tensor]) -> torch.Tensor:
        """``sum_k w_k * L1(phi_k(out), phi_k(neg_j))`` for each negative ``j`` (a vector of length N)."""
        feats_out = self._features(out)
        with torch.no_grad():
            feats_neg = self._features(torch.cat([n.detach() for n in negatives]).to(out.dtype))
        count = len(negatives)
        per_negative = out.new_zeros(count, dtype=torch.float32)
        for name, w in self.layer_weights.items():
            fo = feats_out[name]
            fn = feats_neg[name].reshape(count, *fo.shape)
            per_negative = per_negative + w * (fo.unsqueeze(0) - fn).abs().flatten(1).float().mean(dim=1)
        return per_negative

    def forward(
        self,
        lq: torch.Tensor,
        out: torch.Tensor,
        gt: torch.Tensor | None = None,
        recon: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The signed, weighted negative term for this batch (add it to the loss).

        ``gt`` is needed by the adaptive refresh; ``recon`` (the reconstruction loss) by ``weight="auto"``.
        """
        if gt is not None and self.negatives.adaptive_threshold is not None:
            self.negatives.observe(out, gt)
        per_negative = self.distances(out, self.negatives(lq))
        if self.bound is not None:
            per_negative = per_negative.clamp(max=self.bound)
        distance = per_negative.mean()
        weight = self._effective_weight(distance, recon)
        term = -weight * distance
        self.last = {"neg_distance": distance.detach(), "neg_weight": torch.tensor(weight, dtype=torch.float64), "neg_term": term.detach()}
        return term

    def _effective_weight(self, distance: torch.Tensor, recon: torch.Tensor | None) -> float:
        if self.weight != "auto":
            return self.weight
        if recon is None:
            raise SpnirError("weight='auto' needs the reconstruction loss: call spn(lq, out, recon=loss)")
        r, d = float(recon.detach()), float(distance.detach())
        m = self.auto_momentum
        self._avg_recon = r if self._avg_recon is None else m * self._avg_recon + (1 - m) * r
        self._avg_distance = d if self._avg_distance is None else m * self._avg_distance + (1 - m) * d
        return self.auto_ratio * abs(self._avg_recon) / max(self._avg_distance, 1e-12)

    def stats(self) -> dict[str, float]:
        """The last call's distance, effective weight and term, as floats (for logging)."""
        return {k: float(v) for k, v in self.last.items()}

    def step(self) -> list[int]:
        """Call once after each optimiser step: advances the schedule; returns the refreshed negatives."""
        return self.negatives.step()

    def get_extra_state(self) -> dict[str, Any]:
        return {"avg_recon": self._avg_recon, "avg_distance": self._avg_distance}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        self._avg_recon = state["avg_recon"]
        self._avg_distance = state["avg_distance"]
