"""Training: ``spnir train`` and its Python face :func:`run_training`.

    from spnir.train import run_training
    result = run_training("configs/demo/edsr_tiny_spn.yml", "runs/x", resume="auto")
    result.status, result.best, result.final_weights

Modules: :mod:`~spnir.train.config` (schema, validation, overrides), :mod:`~spnir.train.basicsr` (BasicSR
option files), :mod:`~spnir.train.build` (config -> parts), :mod:`~spnir.train.trainer` (the loop),
:mod:`~spnir.train.optim`, :mod:`~spnir.train.training_state`, :mod:`~spnir.train.distributed`,
:mod:`~spnir.train.run_log`, :mod:`~spnir.train.validation`.
"""
from spnir.train.config import load_config
from spnir.train.run import TrainResult, run_training

__all__ = ["TrainResult", "load_config", "run_training"]
