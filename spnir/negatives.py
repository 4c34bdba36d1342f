"""History negatives: lagging copies of the target network, refreshed from it by EMA on a schedule.

At creation a negative is ``theta_neg = init_decay * theta_fresh + (1 - init_decay) * theta_target``
(``theta_fresh``: a freshly initialised model of the same architecture, initialised as the architecture
initialises itself, see :func:`fresh_instance`; the official code's ``neg_start``). Negative ``k`` is
refreshed every ``periods[k]`` steps: ``theta_neg = decays[k] * theta_neg + (1 - decays[k]) * theta_target``
(parameters averaged, buffers copied). A period of 0 disables the periodic refresh of that negative.
With ``adaptive_threshold`` set, one negative (round robin) is also refreshed with ``adaptive_decay`` on
every step whose batch residual std ``std(2 * (out - gt))`` (per image, averaged over the batch) exceeds
the threshold; the official adaptive setting is ``periods=(0,) * N, adaptive_threshold=0.022,
adaptive_decay=0.001``.

``periods[k]`` goes with ``decays[k]``. (The official code walks ``neg_iter[::-1]`` beside ``neg_decay``, pairing
the periods with the decays in reverse order; with its equal decays that makes no difference.)
"""
from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from spnir.ema import _Pairing, check_same_architecture, ema_update_, unwrap
from spnir.errors import SpnirError
from spnir.ranks import mean_over_ranks

FreshModel = nn.Module | Callable[[], nn.Module]


def reinitialized_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose layers were re-initialised with their own ``reset_parameters``.

    PyTorch's per-layer defaults, not the architecture's own initialisation (SwinIR's trunc-normal std 0.02
    Linear weights become std ~0.07 here): the fallback of :func:`fresh_instance` for modules that are not
    spnir presets."""
    fresh = copy.deepcopy(model)
    for module in fresh.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset):
            reset()
    return fresh


def fresh_instance(model: nn.Module) -> nn.Module:
    """A freshly initialised model of ``model``'s architecture, drawn from torch's global RNG.

    A model built by :func:`spnir.archs.create_model` (it carries ``spnir_preset``) gets a new instance of its
    preset: the architecture's own initialisation, as the official code's ``build_network`` gives. Any other
    module gets :func:`reinitialized_copy` (each layer's PyTorch default); pass ``fresh_model=`` (a factory
    such as ``lambda: MyNet(...)``) to SPN / :class:`NegativeBank` for your architecture's own."""
    preset = getattr(model, "spnir_preset", None)
    if preset is None:
        return reinitialized_copy(model)
    from spnir.archs import create_model  # the registry imports every family: only when needed

    return create_model(preset["name"], preset["scale"], **preset["overrides"])


def check_bank_options(periods: Sequence[int], decays: Sequence[float], init_decay: float,
                       adaptive_threshold: float | None, adaptive_decay: float, prefix: str = "") -> None:
    """The rules :class:`NegativeBank` enforces on its options, each error naming the option after ``prefix`` (a
    config passes ``"spn."``), so a config is checked before any work starts."""
    if len(periods) != len(decays):
        raise SpnirError(f"{prefix}periods and {prefix}decays need one entry per negative; got {len(periods)} "
                         f"periods {list(periods)} and {len(decays)} decays {list(decays)}")
    if not periods:
        raise SpnirError(f"{prefix}periods and {prefix}decays are empty: a negative bank needs at least one negative")
    if any(p < 0 for p in periods):
        raise SpnirError(f"{prefix}periods = {list(periods)}: expected integers >= 0 (0: no periodic refresh)")
    for name, value in [("init_decay", init_decay), ("adaptive_decay", adaptive_decay),
                        *(("decays", d) for d in decays)]:
        if not 0.0 <= value <= 1.0:
            raise SpnirError(f"{prefix}{name} = {value!r}: expected a number in [0, 1]")
    if adaptive_threshold is None and all(p == 0 for p in periods):
        raise SpnirError(f"every one of {prefix}periods is 0 and {prefix}adaptive_threshold is unset: the negatives "
                         "would never refresh")


class NegativeBank(nn.Module):
    """The negative models of SPN and their refresh schedule.

    ``bank(x)`` returns the list of the negatives' outputs, computed without autograd.
    ``bank.step()`` (once per optimisation step) advances the schedule and refreshes what is due.
    ``bank.negatives(lq, out, gt)`` makes it the history source of a :class:`~spnir.spn.NegativeLoss`.

    Args:
        model: the target network (DDP/compile wrappers are looked through).
        periods: refresh period of each negative in steps (0: never periodically).
        decays: EMA decay of each negative's refresh.
        init_decay: weight of a freshly initialised model in each negative at creation (0: exact copy).
        fresh_model: the fresh model for ``init_decay > 0``: a module or a factory (called once per
            negative); default :func:`fresh_instance` of the target (a new instance of its spnir preset, else
            each layer's ``reset_parameters``).
        adaptive_threshold: refresh one negative whenever the batch residual std exceeds this (None: off).
        adaptive_decay: decay of the adaptive refresh.
    """

    target: nn.Module

    def __init__(
        self,
        model: nn.Module,
        periods: Sequence[int] = (100,),
        decays: Sequence[float] = (0.1,),
        init_decay: float = 0.0,
        fresh_model: FreshModel | None = None,
        adaptive_threshold: float | None = None,
        adaptive_decay: float = 0.001,
    ) -> None:
        super().__init__()
        periods, decays = tuple(int(p) for p in periods), tuple(float(d) for d in decays)
        check_bank_options(periods, decays, init_decay, adaptive_threshold, adaptive_decay)
        self.periods, self.decays = periods, decays
        self.init_decay = float(init_decay)
        self.adaptive_threshold = adaptive_threshold
        self.adaptive_decay = float(adaptive_decay)
        target = unwrap(model)
        self.__dict__["target"] = target  # not a submodule: the target's weights are not the bank's
        self.models = nn.ModuleList(self._create_negative(target, fresh_model) for _ in periods)
        self._pairings = [_Pairing(neg, target, "spn") for neg in self.models]
        self.steps = 0
        self.adaptive_refreshes = 0
        self._residual_stds: list[torch.Tensor] = []  # observed since the last step, on the device

    def _create_negative(self, target: nn.Module, fresh_model: FreshModel | None) -> nn.Module:
        negative = copy.deepcopy(target)
        if self.init_decay > 0.0:
            fresh = fresh_model() if callable(fresh_model) and not isinstance(fresh_model, nn.Module) else fresh_model
            fresh = fresh_instance(target) if fresh is None else unwrap(fresh)
            check_same_architecture(target, fresh, "fresh_model")
            negative.load_state_dict(fresh.state_dict())
            ema_update_(negative, target, self.init_decay)
        return negative.eval().requires_grad_(False)

    def __len__(self) -> int:
        return len(self.models)

    def train(self, mode: bool = True) -> NegativeBank:
        return super().train(False)  # negatives are fixed functions between refreshes

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        for pairing in self._pairings:
            pairing.check()
        return [negative(x) for negative in self.models]

    def refresh(self, index: int, decay: float) -> None:
        """``theta_neg[index] = decay * theta_neg[index] + (1 - decay) * theta_target`` now."""
        ema_update_(self.models[index], self.target, decay, self._pairings[index])

    def negatives(self, lq: torch.Tensor, out: torch.Tensor, gt: torch.Tensor | None = None) -> list[torch.Tensor]:
        """The negatives' outputs on ``lq``: the history source of :mod:`spnir.negative_sources`.

        With ``adaptive_threshold`` set, a call with ``gt`` also :meth:`observe`-s the batch residual."""
        if gt is not None and self.adaptive_threshold is not None:
            self.observe(out, gt)
        return self(lq)

    @torch.no_grad()
    def observe(self, out: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        """Record the batch residual std (a device tensor, returned) for the adaptive refresh at the next
        :meth:`step`.

        As the official code: the std of ``2 * (out - gt)`` per image, averaged over the batch (and over DDP
        ranks, so that every rank refreshes the same negative). Several calls before one step (gradient
        accumulation over equal micro-batches) are averaged: the mean over the whole batch."""
        residual = 2 * (out.detach().float() - gt.float())
        std = mean_over_ranks(residual.flatten(1).std(dim=1).mean())
        self._residual_stds.append(std)
        return std

    def step_inputs(self) -> dict[str, torch.Tensor]:
        """What the next :meth:`step` decides on, still on the device, by keyword: ``residual_std`` once a
        batch residual was observed (else nothing). A caller may fetch them with its own values in one
        transfer and pass them back as floats: ``step(**fetched)``."""
        if not self._residual_stds:
            return {}
        stds = self._residual_stds
        return {"residual_std": stds[0] if len(stds) == 1 else torch.stack(stds).mean()}

    def step(self, residual_std: float | None = None) -> list[int]:
        """Advance one optimisation step; refresh the negatives that are due. Returns their indices.

        ``residual_std``: :meth:`step_inputs` already fetched by the caller (else it is read here)."""
        self.steps += 1
        refreshed = []
        for index, (period, decay) in enumerate(zip(self.periods, self.decays)):
            if period and self.steps % period == 0:
                self.refresh(index, decay)
                refreshed.append(index)
        if self.adaptive_threshold is not None:
            if residual_std is None:
                pending = self.step_inputs()
                if not pending:
                    raise SpnirError("adaptive refresh needs the batch residual: pass gt, as in spn(lq, out, gt=gt)")
                residual_std = float(pending["residual_std"])
            if residual_std > self.adaptive_threshold:
                index = self.adaptive_refreshes % len(self.models)
                self.refresh(index, self.adaptive_decay)
                self.adaptive_refreshes += 1
                refreshed.append(index)
        self._residual_stds = []
        return refreshed

    def get_extra_state(self) -> dict[str, Any]:
        return {"steps": self.steps, "adaptive_refreshes": self.adaptive_refreshes,
                "periods": self.periods, "decays": self.decays}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        if tuple(state["periods"]) != self.periods or tuple(state["decays"]) != self.decays:
            raise SpnirError(
                f"saved negatives have periods {tuple(state['periods'])} / decays {tuple(state['decays'])}, "
                f"this bank has {self.periods} / {self.decays}"
            )
        self.steps = int(state["steps"])
        self.adaptive_refreshes = int(state["adaptive_refreshes"])

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs) -> None:
        """Checks the saved negatives against this bank (also when a loss holding the bank is loaded)."""
        if strict:
            expected = {k: tuple(v.shape) for k, v in self.state_dict().items() if torch.is_tensor(v)}
            got = {k[len(prefix):]: tuple(v.shape) for k, v in state_dict.items()
                   if k.startswith(prefix) and torch.is_tensor(v)}
            if expected != got:
                missing = sorted(set(expected) - set(got))[:5]
                unexpected = sorted(set(got) - set(expected))[:5]
                shapes = [k for k in expected if k in got and got[k] != expected[k]][:5]
                raise SpnirError(
                    f"negative-bank state does not fit this target model ({len(self.models)} negatives): "
                    f"missing {missing}, unexpected {unexpected}, shape mismatches {shapes}"
                )
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)
