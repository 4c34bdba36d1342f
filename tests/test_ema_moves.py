"""SPN's negatives and the EMA model follow their model through every move (device, dtype, memory format,
tensors replaced), in either order; a model moved without them is a clear error."""
from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from spnir import SPN, SpnirError
from spnir.ema import ModelEMA

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def bn_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))


def make_spn(model: nn.Module) -> SPN:
    """Refreshed at every step with decay 0: after a step each negative is an exact copy of the model."""
    return SPN(model, weight=0.1, layer_weights={"pixels": 1.0}, features=lambda x: {"pixels": x},
               periods=(1, 1), decays=(0.0, 0.0))


def _double(m: nn.Module) -> None:
    m.double()


def _to_float64(m: nn.Module) -> None:
    m.to(torch.float64)


def _channels_last(m: nn.Module) -> None:
    m.to(memory_format=torch.channels_last)


def _to_float64_new_parameters(m: nn.Module) -> None:
    """``.to()`` with torch's future flag that gives the module new Parameter objects, not only new data."""
    torch.__future__.set_overwrite_module_params_on_conversion(True)
    try:
        m.to(torch.float64)
    finally:
        torch.__future__.set_overwrite_module_params_on_conversion(False)


def _cuda(m: nn.Module) -> None:
    m.cuda()


# a move and the input that goes with the moved model
MOVES: dict[str, tuple[Callable[[nn.Module], None], dict]] = {
    "double": (_double, {"dtype": torch.float64}),
    "to_float64": (_to_float64, {"dtype": torch.float64}),
    "channels_last": (_channels_last, {"memory_format": torch.channels_last}),
    "new_parameters": (_to_float64_new_parameters, {"dtype": torch.float64}),
    "cuda": (_cuda, {"device": "cuda"}),
}
MOVE_PARAMS = [pytest.param(name, marks=CUDA) if name == "cuda" else name for name in MOVES]


def train_step(model: nn.Module, x: torch.Tensor, spn: SPN | None = None) -> None:
    """One SGD step in train mode: the BatchNorm running statistics move away from their initial values."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    model.train()
    out = model(x)
    loss = out.abs().mean() + (spn(x, out) if spn is not None else 0)
    loss.backward()
    opt.step()


def assert_copy_of(copy: nn.Module, model: nn.Module) -> None:
    mine, theirs = copy.state_dict(), model.state_dict()
    assert list(mine) == list(theirs)
    for name, value in theirs.items():
        assert mine[name].dtype == value.dtype and mine[name].device == value.device, name
        assert torch.equal(mine[name], value), name
    assert not torch.equal(model[1].running_mean, torch.zeros_like(model[1].running_mean))


@pytest.mark.parametrize("spn_first", [False, True], ids=["model_first", "spn_first"])
@pytest.mark.parametrize("move", MOVE_PARAMS)
def test_negatives_follow_the_model_through_a_move(move, spn_first):
    model = bn_net()
    spn = make_spn(model)
    apply, input_kwargs = MOVES[move]
    for module in ((spn, model) if spn_first else (model, spn)):
        apply(module)
    x = torch.rand(2, 3, 8, 8).to(**input_kwargs)
    for _ in range(2):
        train_step(model, x, spn)
        assert spn.step() == [0, 1]
        for negative in spn.negatives.models:
            assert_copy_of(negative, model)


@pytest.mark.parametrize("ema_first", [False, True], ids=["model_first", "ema_first"])
@pytest.mark.parametrize("move", MOVE_PARAMS)
def test_model_ema_follows_the_model_through_a_move(move, ema_first):
    model = bn_net()
    ema = ModelEMA(model, decay=0.0)
    apply, input_kwargs = MOVES[move]
    for module in ((ema, model) if ema_first else (model, ema)):
        apply(module)
    x = torch.rand(2, 3, 8, 8).to(**input_kwargs)
    for _ in range(2):
        train_step(model, x)
        ema.update()
        assert_copy_of(ema.module, model)


def test_tensors_put_in_by_load_state_dict_assign_are_followed():
    model, other = bn_net(), bn_net()
    spn, ema = make_spn(model), ModelEMA(model, decay=0.0)
    train_step(other, torch.rand(2, 3, 8, 8))
    model.load_state_dict(other.state_dict(), assign=True)
    spn.step()
    ema.update()
    assert_copy_of(spn.negatives.models[0], other)
    assert_copy_of(ema.module, other)


@pytest.mark.parametrize("moved", ["model", "spn"])
def test_model_and_spn_moved_apart_is_a_clear_error(moved):
    model = bn_net()
    spn = make_spn(model)
    (model if moved == "model" else spn).double()
    x = torch.rand(2, 3, 8, 8, dtype=torch.float64 if moved == "model" else torch.float32)
    with pytest.raises(SpnirError, match=r"0\.weight is torch\.float.* one was moved without the other.*spn\.to"):
        spn(x, model(x))
    with pytest.raises(SpnirError, match=r"moved without the other"):
        spn.step()


def test_model_and_ema_moved_apart_is_a_clear_error():
    model = bn_net()
    ema = ModelEMA(model)
    model.double()
    with pytest.raises(SpnirError, match=r"float64 on cpu but ema's is torch\.float32 on cpu.*ema\.to"):
        ema.update()


def test_memory_format_alone_may_differ():
    """Values are the same in either memory format: a model in channels_last refreshes negatives that are not."""
    model = bn_net()
    spn, ema = make_spn(model), ModelEMA(model, decay=0.0)
    model.to(memory_format=torch.channels_last)
    train_step(model, torch.rand(2, 3, 8, 8), spn)
    spn.step()
    ema.update()
    assert_copy_of(spn.negatives.models[0], model)
    assert_copy_of(ema.module, model)
