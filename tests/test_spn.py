"""SPN: the loss formula, gradient flow, schedules, state round trip and bad input."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spnir import SPN, NegativeBank, SpnirError, VGGFeatures


def tiny_net(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))


def two_level_features(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"raw": x, "pooled": F.avg_pool2d(x, 2), "unused": x * 0}


def perturb_(model: nn.Module, scale: float = 0.1) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def test_term_equals_formula_computed_by_hand():
    model = tiny_net()
    spn = SPN(model, weight=0.25, layer_weights={"raw": 0.2, "pooled": 0.8}, features=two_level_features,
              periods=(5, 7), decays=(0.5, 0.9))
    perturb_(spn.negatives.models[0])
    perturb_(spn.negatives.models[1], 0.3)
    lq = torch.rand(2, 3, 16, 12)
    out = model(lq)
    term = spn(lq, out)
    negs = [m(lq) for m in spn.negatives.models]
    expected = 0.0
    for neg in negs:
        expected += 0.2 * (out - neg).abs().mean() + 0.8 * (F.avg_pool2d(out, 2) - F.avg_pool2d(neg, 2)).abs().mean()
    expected = -0.25 * expected / 2
    assert torch.allclose(term, expected, rtol=1e-6, atol=1e-8)
    assert term.item() < 0  # the distance is subtracted
    assert spn.stats()["neg_weight"] == pytest.approx(0.25)


def test_gradients_reach_target_only():
    model = tiny_net()
    vgg = VGGFeatures("vgg16", ["relu1_2", "relu2_2"], vgg_weights="random")
    spn = SPN(model, weight=1.0, layer_weights={"relu1_2": 0.5, "relu2_2": 0.5}, features=vgg)
    perturb_(spn.negatives.models[0])
    lq = torch.rand(1, 3, 16, 16)
    spn(lq, model(lq)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in spn.negatives.parameters())
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    assert list(spn.parameters()) == list(spn.negatives.parameters())  # nothing trainable


def _reference_schedule(target_history, periods, decays, init):
    """Float64 recurrence of the negatives' weights over a history of target weights."""
    negs = [init.clone() for _ in periods]
    for step, target in enumerate(target_history, start=1):
        for k, (period, decay) in enumerate(zip(periods, decays)):
            if period and step % period == 0:
                negs[k] = decay * negs[k] + (1 - decay) * target
    return negs


@pytest.mark.parametrize("periods,decays", [((3,), (0.7,)), ((2, 5, 7, 11), (0.1, 0.5, 0.9, 0.99))])
def test_periodic_schedule_follows_recurrence(periods, decays):
    model = nn.Linear(4, 4)
    bank = NegativeBank(model, periods=periods, decays=decays)
    init = torch.cat([p.detach().double().flatten() for p in model.parameters()])
    history = []
    for _ in range(60):
        perturb_(model)
        history.append(torch.cat([p.detach().double().flatten() for p in model.parameters()]))
        bank.step()
    expected = _reference_schedule(history, periods, decays, init)
    for neg, exp in zip(bank.models, expected):
        got = torch.cat([p.detach().double().flatten() for p in neg.parameters()])
        assert torch.allclose(got, exp, atol=1e-6)
    assert bank.steps == 60


def test_buffers_are_copied_not_averaged():
    model = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3))
    bank = NegativeBank(model, periods=(2,), decays=(0.9,))
    model.train()
    model(torch.rand(4, 3, 5, 5))  # changes running stats
    bank.step()
    assert not torch.equal(bank.models[0][1].running_mean, model[1].running_mean)
    bank.step()
    assert torch.equal(bank.models[0][1].running_mean, model[1].running_mean)


def test_adaptive_refresh_round_robin():
    model = nn.Conv2d(3, 3, 1)
    spn = SPN(model, weight=0.1, layer_weights={"raw": 1.0}, features=two_level_features,
              periods=(0, 0, 0), decays=(0.5, 0.5, 0.5), adaptive_threshold=0.022, adaptive_decay=0.001)
    gt = torch.rand(2, 3, 8, 8)
    refreshed = []
    for i in range(7):
        perturb_(model)
        before = [m.weight.detach().clone() for m in spn.negatives.models]
        out = gt + (0.5 if i % 2 == 0 else 0.0) * torch.randn_like(gt)  # large residual on even steps
        std = (2 * (out - gt)).flatten(1).std(dim=1).mean().item()
        spn(gt, out, gt=gt)
        target = model.weight.detach().clone()
        refreshed.append(spn.step())
        if std > 0.022:
            k = refreshed[-1][0]
            assert torch.allclose(spn.negatives.models[k].weight, 0.001 * before[k] + 0.999 * target, atol=1e-6)
        else:
            assert refreshed[-1] == []
    assert refreshed == [[0], [], [1], [], [2], [], [0]]
    assert spn.negatives.adaptive_refreshes == 4


def test_step_inputs_fetched_by_the_caller_decide_as_the_device_values():
    torch.manual_seed(0)
    models = [nn.Conv2d(3, 3, 1) for _ in range(2)]
    models[1].load_state_dict(models[0].state_dict())
    kwargs = dict(weight=0.1, layer_weights={"raw": 1.0}, features=two_level_features, periods=(0, 0),
                  decays=(0.5, 0.5), adaptive_threshold=0.022)
    by_itself, by_caller = SPN(models[0], **kwargs), SPN(models[1], **kwargs)
    gt = torch.rand(2, 3, 8, 8)
    assert by_caller.step_inputs() == {}
    for i in range(4):
        out = gt + (0.5 if i % 2 == 0 else 0.0) * torch.randn_like(gt)
        by_itself(gt, out, gt=gt)
        by_caller(gt, out, gt=gt)
        fetched = {name: float(value) for name, value in by_caller.step_inputs().items()}
        assert set(fetched) == {"residual_std"}
        assert by_caller.step(**fetched) == by_itself.step()
    assert by_caller.negatives.adaptive_refreshes == by_itself.negatives.adaptive_refreshes == 2


def test_adaptive_needs_gt():
    spn = SPN(nn.Conv2d(3, 3, 1), layer_weights={"raw": 1.0}, features=two_level_features,
              periods=(0,), decays=(0.5,), adaptive_threshold=0.022)
    x = torch.rand(1, 3, 4, 4)
    spn(x, x)
    with pytest.raises(SpnirError, match="gt"):
        spn.step()


def test_init_decay_mixes_fresh_and_target():
    model = tiny_net()
    fresh = tiny_net()
    for init_decay in (0.0, 0.3, 1.0):
        bank = NegativeBank(model, periods=(10,), decays=(0.5,), init_decay=init_decay, fresh_model=fresh)
        for neg_p, p, f in zip(bank.models[0].parameters(), model.parameters(), fresh.parameters()):
            assert torch.allclose(neg_p, init_decay * f + (1 - init_decay) * p, atol=1e-7)
    exact = NegativeBank(model, periods=(10,), decays=(0.5,))
    assert all(torch.equal(a, b) for a, b in zip(exact.models[0].parameters(), model.parameters()))
    # the default fresh model re-initialises layers: a pure fresh negative differs from the target
    default_fresh = NegativeBank(model, periods=(10,), decays=(0.5,), init_decay=1.0)
    assert not torch.equal(default_fresh.models[0][0].weight, model[0].weight)


def test_state_dict_round_trip_mid_schedule():
    torch.manual_seed(1)
    model = tiny_net()
    kwargs = dict(weight="auto", layer_weights={"raw": 1.0}, features=two_level_features,
                  periods=(3, 4), decays=(0.5, 0.8))
    spn = SPN(model, **kwargs)
    lq = torch.rand(2, 3, 8, 8)
    for _ in range(5):
        perturb_(model)
        out = model(lq)
        spn(lq, out, recon=F.l1_loss(out, lq))
        spn.step()
    state = copy.deepcopy(spn.state_dict())
    twin_model = copy.deepcopy(model)
    twin = SPN(twin_model, **kwargs)
    twin.load_state_dict(state)
    assert twin.negatives.steps == 5
    for _ in range(6):
        perturb_(model)
        twin_model.load_state_dict(model.state_dict())
        a_out, b_out = model(lq), twin_model(lq)
        a = spn(lq, a_out, recon=F.l1_loss(a_out, lq))
        b = twin(lq, b_out, recon=F.l1_loss(b_out, lq))
        assert torch.equal(a, b)
        assert spn.step() == twin.step()
    for x, y in zip(spn.negatives.parameters(), twin.negatives.parameters()):
        assert torch.equal(x, y)


def test_state_dict_holds_negatives_not_features():
    spn = SPN(tiny_net(), layer_weights={"relu1_1": 1.0}, features="vgg16", vgg_weights="random")
    assert all(k.startswith(("negatives.", "_extra_state")) for k in spn.state_dict())


def test_saved_keys_stay_those_of_earlier_checkpoints():
    model = nn.Conv2d(3, 3, 1)
    spn = SPN(model, layer_weights={"raw": 1.0}, features=two_level_features, periods=(3, 4), decays=(0.5, 0.8))
    keys = {"_extra_state", "negatives._extra_state", "negatives.models.0.weight", "negatives.models.0.bias",
            "negatives.models.1.weight", "negatives.models.1.bias"}
    assert set(spn.state_dict()) == keys
    saved = {"_extra_state": {"avg_recon": None, "avg_distance": None},
             "negatives._extra_state": {"steps": 7, "adaptive_refreshes": 0, "periods": (3, 4), "decays": (0.5, 0.8)},
             **{f"negatives.models.{k}.{name}": torch.full_like(p, k + 1.0)
                for k in range(2) for name, p in model.named_parameters()}}
    spn.load_state_dict(saved)
    assert spn.source.steps == 7 and torch.equal(spn.negatives.models[1].weight, torch.full_like(model.weight, 2.0))


def test_bound_caps_each_negative_distance():
    model = tiny_net()
    spn = SPN(model, weight=1.0, layer_weights={"raw": 1.0}, features=two_level_features, max_distance=1e-3)
    perturb_(spn.negatives.models[0], 1.0)
    lq = torch.rand(1, 3, 8, 8)
    out = model(lq)
    term = spn(lq, out)
    assert term.item() == pytest.approx(-1e-3)
    term.backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in model.parameters())


def test_auto_weight_tracks_ratio_of_running_averages():
    model = tiny_net()
    spn = SPN(model, weight="auto", target_ratio=0.05, layer_weights={"raw": 1.0}, features=two_level_features)
    perturb_(spn.negatives.models[0])
    lq = torch.rand(2, 3, 8, 8)
    out = model(lq)
    recon = torch.tensor(0.2)
    term = spn(lq, out, recon=recon)
    assert term.item() == pytest.approx(-0.05 * 0.2, rel=1e-5)  # first call: |term| == ratio * recon
    assert spn.stats()["neg_weight"] > 0
    with pytest.raises(SpnirError, match="recon"):
        spn(lq, out)


def test_short_training_on_real_images_decreases_loss():
    from skimage import data as skdata

    torch.manual_seed(0)
    image = torch.from_numpy(skdata.astronaut()[100:228, 150:278].copy()).permute(2, 0, 1).float() / 255
    gt = image.unsqueeze(0)
    gen = torch.Generator().manual_seed(0)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=gen)).clamp(0, 1)
    model = tiny_net(16)
    spn = SPN(model, weight=0.01, layer_weights={"relu1_2": 0.5, "relu2_2": 0.5},
              features=VGGFeatures("vgg16", ["relu1_2", "relu2_2"], vgg_weights="random"), periods=(5,), decays=(0.5,))
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(40):
        out = model(lq)
        recon = F.l1_loss(out, gt)
        loss = recon + spn(lq, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        spn.step()
        losses.append(recon.item())
    assert spn.stats()["neg_distance"] > 0  # the negatives lag behind
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:5]) / 5


def test_bad_input_errors():
    model = tiny_net()
    with pytest.raises(SpnirError, match="relu9_9"):
        SPN(model, layer_weights={"relu9_9": 1.0}, features="vgg16", vgg_weights="random")
    vgg = VGGFeatures("vgg16", ["relu1_1"], vgg_weights="random")
    with pytest.raises(SpnirError, match="relu2_2"):
        SPN(model, layer_weights={"relu2_2": 1.0}, features=vgg)
    with pytest.raises(SpnirError, match="one entry per negative"):
        SPN(model, features=two_level_features, layer_weights={"raw": 1}, periods=(1, 2), decays=(0.5,))
    with pytest.raises(SpnirError, match="not the same architecture"):
        NegativeBank(model, init_decay=0.5, fresh_model=tiny_net(4))
    with pytest.raises(SpnirError, match="never refresh"):
        NegativeBank(model, periods=(0,), decays=(0.5,))
    spn = SPN(model, layer_weights={"missing": 1.0}, features=two_level_features)
    x = torch.rand(1, 3, 4, 4)
    with pytest.raises(SpnirError, match="missing"):
        spn(x, model(x))


def test_load_state_of_other_architecture_is_refused():
    spn = SPN(tiny_net(8), layer_weights={"raw": 1.0}, features=two_level_features)
    other = SPN(tiny_net(4), layer_weights={"raw": 1.0}, features=two_level_features)
    with pytest.raises(SpnirError, match="does not fit"):
        spn.negatives.load_state_dict(other.negatives.state_dict())


def test_moves_features_with_module():
    spn = SPN(tiny_net(), layer_weights={"relu1_1": 1.0}, vgg_weights="random")
    spn.double()
    assert next(spn.features.parameters()).dtype == torch.float64
    assert next(spn.negatives.parameters()).dtype == torch.float64


def test_feature_dtype_bfloat16_runs_features_in_bf16_and_sums_in_float32():
    seen = []

    def features(x):
        seen.append(torch.nn.functional.conv2d(x, torch.ones(2, 3, 1, 1)).dtype)
        return {"raw": torch.nn.functional.conv2d(x, torch.ones(2, 3, 1, 1))}

    model = tiny_net()
    exact = SPN(model, weight=1.0, layer_weights={"raw": 1.0}, features=features)
    fast = SPN(model, weight=1.0, layer_weights={"raw": 1.0}, features=features, feature_dtype="bf16")
    for spn in (exact, fast):
        spn.negatives.models[0].load_state_dict(exact.negatives.models[0].state_dict())
    perturb_(exact.negatives.models[0])
    fast.negatives.models[0].load_state_dict(exact.negatives.models[0].state_dict())
    lq = torch.rand(2, 3, 16, 16)
    out = model(lq)
    a, b = exact(lq, out), fast(lq, out)
    assert seen[:2] == [torch.float32, torch.float32] and seen[2:] == [torch.bfloat16, torch.bfloat16]
    assert b.dtype == torch.float32 and torch.allclose(a, b, rtol=2e-2)
    b.backward()
    assert model[0].weight.grad is not None
    with pytest.raises(SpnirError, match="feature_dtype"):
        SPN(model, layer_weights={"raw": 1.0}, features=features, feature_dtype="int8")
