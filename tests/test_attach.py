"""``spn.attach(optimizer)``: SPN advances after each real optimizer step and rides in the optimizer's state."""
from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap

import pytest
import torch
from torch import nn

from spnir import SPN, NegativeLoss, SpnirError
from spnir.negative_sources import InputNegatives


def bn_net() -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))


def make_spn(model: nn.Module, periods=(2, 3), decays=(0.5, 0.3), weight: float | str = 0.1) -> SPN:
    return SPN(model, weight=weight, layer_weights={"pixels": 1.0}, features=lambda x: {"pixels": x},
               periods=periods, decays=decays)


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1000 + step)
    gt = torch.rand(2, 3, 8, 8, generator=g)
    return (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1), gt


def same_state(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k] for k in a)


def test_attached_spn_steps_as_the_hand_stepped_one_once_per_optimizer_step():
    """Two micro-batches per optimizer step (gradient accumulation): one advance per optimizer.step()."""
    torch.manual_seed(0)
    model = bn_net()
    twin = bn_net()
    twin.load_state_dict(model.state_dict())
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    twin_opt = torch.optim.SGD(twin.parameters(), lr=0.1)
    spn = make_spn(model)
    assert spn.attach(opt) is spn
    by_hand = make_spn(twin)
    refreshed_any = False
    for step in range(6):
        for net, loss_fn, optimizer in ((model, spn, opt), (twin, by_hand, twin_opt)):
            for micro in range(2):
                lq, gt = batch(2 * step + micro)
                out = net(lq)
                ((out - gt).abs().mean() + loss_fn(lq, out)).backward()
            optimizer.step()
            optimizer.zero_grad()
        refreshed_any |= bool(by_hand.step())
        assert spn.negatives.steps == step + 1
        assert same_state(spn.state_dict(), by_hand.state_dict())
    assert refreshed_any


def test_attach_misuse_is_a_clear_error():
    model = bn_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spn = make_spn(model).attach(opt)
    with pytest.raises(SpnirError, match="already attached"):
        spn.attach(opt)
    with pytest.raises(SpnirError, match="already drives a negative loss"):
        make_spn(model).attach(opt)
    with pytest.raises(SpnirError, match="remove the spn.step"):
        spn.step()
    other = torch.optim.SGD(bn_net().parameters(), lr=0.1)
    with pytest.raises(SpnirError, match="updates none of the parameters"):
        make_spn(model).attach(other)
    with pytest.raises(SpnirError, match="needs a torch.optim.Optimizer"):
        make_spn(model).attach(model)  # type: ignore[arg-type]


def test_detach_gives_the_loop_back():
    model = bn_net()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    spn = make_spn(model).attach(opt).detach()
    model(torch.rand(1, 3, 8, 8)).mean().backward()
    opt.step()
    assert spn.negatives.steps == 0 and "spnir" not in opt.state_dict()
    spn.step()
    assert spn.negatives.steps == 1
    make_spn(model).attach(opt)  # the optimizer is free again


@pytest.mark.parametrize("fused", [False, True], ids=["foreach", "fused"])
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_a_step_the_grad_scaler_skips_does_not_advance_the_negatives(dtype, fused):
    """Fused optimizers are called by the scaler even on a skipped step, with ``found_inf`` set."""
    torch.manual_seed(0)
    model = bn_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2, fused=fused)
    spn = make_spn(model, periods=(1,), decays=(0.5,)).attach(opt)
    scaler = torch.amp.GradScaler("cpu")
    for step, poisoned in enumerate([True, False, True, False]):
        lq, gt = batch(step)
        with torch.autocast("cpu", dtype=dtype):
            out = model(lq)
            loss = (out.float() - gt).abs().mean() + spn(lq, out)
        scaler.scale(loss).backward()
        if poisoned:
            model[0].weight.grad[0, 0, 0, 0] = float("inf")
        weights, negatives = model[0].weight.detach().clone(), spn.negatives.models[0][0].weight.clone()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
        assert torch.equal(model[0].weight, weights) == poisoned
        assert torch.equal(spn.negatives.models[0][0].weight, negatives) == poisoned
    assert spn.negatives.steps == 2


def test_state_rides_in_the_optimizer_state_and_loads_with_weights_only():
    torch.manual_seed(0)
    model = bn_net()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    spn = make_spn(model, weight="auto").attach(opt)
    for step in range(3):
        lq, gt = batch(step)
        out = model(lq)
        recon = (out - gt).abs().mean()
        (recon + spn(lq, out, recon=recon)).backward()
        opt.step()
        opt.zero_grad()
    buffer = io.BytesIO()
    torch.save(opt.state_dict(), buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    assert same_state(saved["spnir"], spn.state_dict()) and saved["spnir"]["_extra_state"]["avg_recon"] > 0

    fresh_model = bn_net()
    fresh_opt = torch.optim.Adam(fresh_model.parameters(), lr=1e-2)
    fresh = make_spn(fresh_model, weight="auto").attach(fresh_opt)
    fresh_opt.load_state_dict(saved)
    assert same_state(fresh.state_dict(), spn.state_dict())
    assert "spnir" in saved  # the caller's dict is left as it was

    three = torch.optim.Adam(fresh_model.parameters(), lr=1e-2)
    make_spn(fresh_model, periods=(2, 3, 4), decays=(0.5, 0.3, 0.1), weight="auto").attach(three)
    with pytest.raises(SpnirError, match=r"negative-bank state does not fit this target model \(3 negatives\)"):
        three.load_state_dict(saved)

    stateless = torch.optim.Adam(fresh_model.parameters(), lr=1e-2)
    NegativeLoss(InputNegatives(), layer_weights={"pixels": 1.0}, features=lambda x: {"pixels": x}).attach(stateless)
    with pytest.raises(SpnirError, match="Adam state's 'spnir' entry does not fit this NegativeLoss: .*Unexpected"):
        stateless.load_state_dict(saved)

    plain = torch.optim.Adam(model.parameters(), lr=1e-2).state_dict()
    with pytest.raises(SpnirError, match="has no 'spnir' entry.*load it before spn.attach"):
        fresh_opt.load_state_dict(plain)


RUN = textwrap.dedent("""
    import sys
    import torch
    from torch import nn
    from spnir import SPN

    phase, folder, seed = sys.argv[1], sys.argv[2], int(sys.argv[3])
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 3, 3, padding=1))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    spn = SPN(model, weight="auto", layer_weights={"pixels": 1.0}, features=lambda x: {"pixels": x},
              periods=(2, 3), decays=(0.5, 0.3), adaptive_threshold=0.0, adaptive_decay=0.2).attach(opt)
    first = 0
    if phase == "resume":
        state = torch.load(f"{folder}/half.pt", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        first = 4
    for step in range(first, 8):
        if step == 4 and phase == "full":
            torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, f"{folder}/half.pt")
        g = torch.Generator().manual_seed(1000 + step)
        gt = torch.rand(2, 3, 8, 8, generator=g)
        lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
        out = model(lq)
        recon = (out - gt).abs().mean()
        (recon + spn(lq, out, gt=gt, recon=recon)).backward()
        opt.step()
        opt.zero_grad()
    torch.save({"model": model.state_dict(), "spn": spn.state_dict()}, f"{folder}/{phase}.pt")
""")


def test_resume_from_the_optimizer_state_in_a_fresh_process_is_bit_exact(tmp_path):
    script = tmp_path / "run.py"
    script.write_text(RUN)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for phase, seed in (("full", 0), ("resume", 123)):
        done = subprocess.run([sys.executable, str(script), phase, str(tmp_path), str(seed)],
                              capture_output=True, text=True, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
    full = torch.load(tmp_path / "full.pt", weights_only=True)
    resumed = torch.load(tmp_path / "resume.pt", weights_only=True)
    assert same_state(resumed["model"], full["model"])
    assert same_state(resumed["spn"], full["spn"])
    assert full["spn"]["negatives._extra_state"]["adaptive_refreshes"] == 8
    half = torch.load(tmp_path / "half.pt", weights_only=True)
    assert not same_state(half["optimizer"]["spnir"], full["spn"])
