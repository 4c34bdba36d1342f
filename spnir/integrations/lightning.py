"""SPN in PyTorch Lightning: a callback, and one line in ``training_step``.

::

    import lightning as L
    from spnir.integrations.lightning import SPNCallback

    class Restorer(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = MyNet()

        def training_step(self, batch, batch_idx):
            lq, gt = batch
            out = self.net(lq)
            return F.l1_loss(out, gt) + self.spn(lq, out)          # SPN: the term

        def configure_optimizers(self):
            return torch.optim.Adam(self.net.parameters(), 2e-4)

    L.Trainer(callbacks=[SPNCallback("net", weight=0.001)]).fit(Restorer(), loader)   # SPN: the callback

The callback, hook by hook:

- ``setup`` (fit): builds ``SPN(network, **options)`` for the network at the attribute path ``network`` of the
  LightningModule and sets it as ``module.spn`` (``name``): a plain attribute, not a submodule, so the negatives
  are in neither the module's ``state_dict`` nor its ``parameters()``.
- ``load_state_dict`` (``fit(ckpt_path=...)``): the negatives, their schedule and the ``weight="auto"`` averages.
- ``on_train_start`` (after Lightning moved the model and restored the optimizers): the loss follows the network
  to its device and dtype, and :meth:`~spnir.spn.NegativeLoss.attach` ties it to the optimizer that updates the
  network. The negatives then advance after each optimizer step that updates the weights: a step a GradScaler
  skips (``precision="16-mixed"``) does not count, and ``accumulate_grad_batches=k`` advances once per ``k``
  batches. A checkpoint without this callback's state (a run without SPN) starts the negatives from the
  restored weights.
- ``state_dict`` / ``on_save_checkpoint``: the loss's state is in ``checkpoint["callbacks"][state_key]``, once
  (taken out of the optimizer's state, where ``attach`` would keep a second copy).
- ``teardown``: detaches the loss from the optimizer.
"""
from __future__ import annotations

import operator
from typing import TYPE_CHECKING, Any

from torch import nn

from spnir.errors import SpnirError
from spnir.optional import require
from spnir.spn import OPTIMIZER_STATE_KEY, SPN

if TYPE_CHECKING:
    import lightning.pytorch as pl
else:
    pl = require("lightning.pytorch", "spnir.integrations.lightning")


class SPNCallback(pl.Callback):
    """Keeps :class:`~spnir.spn.SPN` for the network ``network`` (an attribute path of the LightningModule,
    ``"net"`` or ``"model.generator"``) and exposes it as ``module.<name>``; ``options`` go to ``SPN``
    (``weight``, ``periods``, ``decays``, ``vgg_weights``, ...)."""

    def __init__(self, network: str, name: str = "spn", **options: Any) -> None:
        self.network, self.name, self.options = network, name, options
        self.spn: SPN | None = None
        self._restored = False  # a checkpoint's state was loaded into this fit's loss

    @property
    def state_key(self) -> str:
        return self._generate_state_key(network=self.network, name=self.name)

    def _network(self, module: pl.LightningModule) -> nn.Module:
        try:
            network = operator.attrgetter(self.network)(module)
        except AttributeError:
            network = None
        if not isinstance(network, nn.Module):
            raise SpnirError(f"SPNCallback: {type(module).__name__}.{self.network} is not a torch module; name the "
                             "attribute that holds the network whose negatives SPN keeps")
        return network

    def _built(self) -> SPN:
        if self.spn is None:
            raise SpnirError("SPNCallback: used before Lightning's setup() built its SPN")
        return self.spn

    def _build(self, module: pl.LightningModule) -> None:
        self.spn = SPN(self._network(module), **self.options)
        object.__setattr__(module, self.name, self.spn)  # a plain attribute: not a submodule, not in state_dict

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        taken = pl_module.__dict__.get(self.name, getattr(pl_module, self.name, None))
        if taken is not None and taken is not self.spn:
            raise SpnirError(f"SPNCallback: {type(pl_module).__name__}.{self.name} is already set; give the callback "
                             "another name=")
        self._restored = False
        self._build(pl_module)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Lightning calls this after ``setup`` when ``fit(ckpt_path=...)`` resumes."""
        self._built().load_state_dict(state_dict)
        self._restored = True

    def state_dict(self) -> dict[str, Any]:
        return self.spn.state_dict() if self.spn is not None else {}

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        network = self._network(pl_module)
        if trainer.ckpt_path is not None and not self._restored:
            pl.utilities.rank_zero_info(f"SPNCallback: {trainer.ckpt_path} holds no SPN state; the negatives start "
                                        "from its weights")
            self._build(pl_module)
        weight = next((p for p in network.parameters() if p.is_floating_point()), None)
        if weight is not None:
            self._built().to(device=weight.device, dtype=weight.dtype)
        network_params = {id(p) for p in network.parameters()}
        drivers = [opt for opt in trainer.optimizers
                   if any(id(p) in network_params for group in opt.param_groups for p in group["params"])]
        if len(drivers) != 1:
            raise SpnirError(f"SPNCallback: {len(drivers)} optimizers update {type(pl_module).__name__}.{self.network}"
                             "; SPN advances with exactly one")
        self._built().attach(drivers[0])

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        for state in checkpoint.get("optimizer_states", ()):
            state.pop(OPTIMIZER_STATE_KEY, None)  # the callback's state holds it

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.spn is not None and stage == "fit":
            self.spn.detach()
