"""Negative sources (history, input, frozen, degraded-gt), the ratio (CR) form and the uncertainty term."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from spnir import SPN, NegativeLoss, SpnirError, VGGFeatures
from spnir.imresize import imresize
from spnir.negative_sources import DegradedGTNegatives, FrozenNegatives, InputNegatives
from spnir.negatives import NegativeBank
from spnir.spn import RATIO_EPS, uncertainty_weights


def tiny_net(width: int = 8) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, width, 3, padding=1), nn.ReLU(), nn.Conv2d(width, 3, 3, padding=1))


def tiny_sr(scale: int = 2) -> nn.Module:
    return nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 3, padding=1), nn.PixelShuffle(scale))


def two_level(x: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"raw": x, "pooled": F.avg_pool2d(x, 2)}


def perturb_(model: nn.Module, scale: float = 0.1) -> None:
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * scale)


def by_hand(a: torch.Tensor, b: torch.Tensor) -> dict[str, torch.Tensor]:
    return {"raw": (a - b).abs().mean(), "pooled": (F.avg_pool2d(a, 2) - F.avg_pool2d(b, 2)).abs().mean()}


# ------------------------------------------------------------------------------------------------ sources


def test_input_negative_is_bicubic_upsampled_input_for_sr():
    lq = torch.rand(2, 3, 8, 6)
    out = torch.rand(2, 3, 16, 12)
    (neg,) = InputNegatives().negatives(lq, out)
    assert neg.shape == out.shape
    assert torch.equal(neg, imresize(lq, 2))
    same = torch.rand(2, 3, 8, 6)
    assert torch.equal(InputNegatives().negatives(same, same.clone())[0], same)
    with pytest.raises(SpnirError, match="integer upscaling"):
        InputNegatives().negatives(lq, torch.rand(2, 3, 16, 18))
    assert InputNegatives().state_dict() == {}


def test_frozen_negatives_are_the_frozen_models_outputs_without_grad():
    torch.manual_seed(0)
    frozen = [tiny_net(), tiny_net()]
    expected_params = [copy.deepcopy(m.state_dict()) for m in frozen]
    source = FrozenNegatives(frozen)
    lq = torch.rand(1, 3, 8, 8)
    negs = source.negatives(lq, lq)
    for neg, model in zip(negs, frozen):
        assert torch.equal(neg, model(lq))
        assert not neg.requires_grad
    assert source.state_dict() == {}  # frozen models are given, not state
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    source.double()
    assert next(frozen[0].parameters()).dtype == torch.float64
    for model, params in zip(frozen, expected_params):
        assert all(torch.equal(model.state_dict()[k].float(), v) for k, v in params.items())
    with pytest.raises(SpnirError, match="same task"):
        FrozenNegatives([tiny_sr().double()]).negatives(lq.double(), lq.double())


def test_degraded_gt_is_reproducible_with_a_seed_and_resumes_exactly():
    steps = [{"type": "blur", "kernel": "gaussian", "sigma": [0.5, 2.0]}, {"type": "noise", "sigma": [5, 15]}]
    gt = torch.rand(2, 3, 16, 16)
    a, b, c = (DegradedGTNegatives(steps, seed=s, count=2) for s in (3, 3, 4))
    first_a, first_b = a.negatives(gt, gt, gt), b.negatives(gt, gt, gt)
    assert len(first_a) == 2 and first_a[0].shape == gt.shape
    assert all(torch.equal(x, y) for x, y in zip(first_a, first_b))
    assert not torch.equal(first_a[0], first_a[1])  # fresh draws per negative
    assert not torch.equal(c.negatives(gt, gt, gt)[0], first_a[0])
    state = copy.deepcopy(a.state_dict())
    expected = a.negatives(gt, gt, gt)
    twin = DegradedGTNegatives(steps, seed=99, count=2)
    twin.load_state_dict(state)
    assert all(torch.equal(x, y) for x, y in zip(twin.negatives(gt, gt, gt), expected))
    with pytest.raises(SpnirError, match="gt"):
        a.negatives(gt, gt)


def test_degraded_gt_with_downscaling_comes_back_to_gt_size():
    gt = torch.rand(1, 3, 16, 12)
    source = DegradedGTNegatives([{"type": "bicubic", "scale": 2}], seed=0)
    (neg,) = source.negatives(gt, gt, gt)
    assert neg.shape == gt.shape
    assert torch.allclose(neg[0], imresize(torch.round(imresize(gt[0], 0.5).clamp(0, 1) * 255) / 255, 2), atol=1e-6)


# ------------------------------------------------------------------------------------------------- forms


def test_difference_form_with_any_source_equals_the_formula():
    lq = torch.rand(2, 3, 8, 8)
    model = tiny_sr()
    out = model(lq)
    loss = NegativeLoss(InputNegatives(), weight=0.5, layer_weights={"raw": 0.3, "pooled": 0.7}, features=two_level)
    term = loss(lq, out)
    d = by_hand(out, imresize(lq, 2))
    assert torch.allclose(term, -0.5 * (0.3 * d["raw"] + 0.7 * d["pooled"]), rtol=1e-6)


def test_ratio_form_equals_formula_by_hand_with_several_negatives():
    model = tiny_net()
    spn = SPN(model, weight=0.1, layer_weights={"raw": 0.25, "pooled": 1.0}, features=two_level,
              periods=(5, 7), decays=(0.5, 0.5), form="ratio")
    perturb_(spn.negatives.models[0])
    perturb_(spn.negatives.models[1], 0.3)
    lq, gt = torch.rand(2, 3, 8, 8), torch.rand(2, 3, 8, 8)
    out = model(lq)
    term = spn(lq, out, gt=gt)
    negs = [m(lq) for m in spn.negatives.models]
    pos = by_hand(out, gt)
    neg = [by_hand(out, n) for n in negs]
    expected = 0.1 * sum(w * pos[k] / ((neg[0][k] + neg[1][k]) / 2 + RATIO_EPS)
                         for k, w in {"raw": 0.25, "pooled": 1.0}.items())
    assert torch.allclose(term, expected, rtol=1e-6)
    assert term.item() > 0
    assert spn.stats()["neg_ratio"] == pytest.approx(term.item() / 0.1, rel=1e-5)
    with pytest.raises(SpnirError, match="gt"):
        spn(lq, out)


def test_ratio_gradient_matches_a_detached_reference():
    lq, gt = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    out = torch.rand(1, 3, 8, 8, requires_grad=True)
    loss = NegativeLoss(InputNegatives(), weight=1.0, layer_weights={"raw": 1.0}, features=two_level, form="ratio")
    loss(lq, out, gt=gt).backward()
    ref_out = out.detach().clone().requires_grad_(True)
    ((ref_out - gt).abs().mean() / ((ref_out - lq).abs().mean() + RATIO_EPS)).backward()
    assert torch.allclose(out.grad, ref_out.grad, rtol=1e-5, atol=1e-9)


@pytest.mark.parametrize("form", ["difference", "ratio"])
def test_gradients_reach_the_target_only(form):
    torch.manual_seed(0)
    model, frozen = tiny_net(), tiny_net()
    vgg = VGGFeatures("vgg16", ["relu1_2"], vgg_weights="random")
    loss = NegativeLoss(FrozenNegatives([frozen]), weight=1.0, layer_weights={"relu1_2": 1.0}, features=vgg,
                        form=form, uncertainty_weight=1.0)
    lq, gt = torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 16)
    loss(lq, model(lq), gt=gt).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert all(p.grad is None and not p.requires_grad for p in frozen.parameters())
    assert all(p.grad is None and not p.requires_grad for p in vgg.parameters())
    assert list(loss.parameters()) == []


def test_spn_is_the_negative_loss_with_history_negatives():
    torch.manual_seed(0)
    model = tiny_net()
    spn = SPN(model, weight=0.2, layer_weights={"raw": 1.0}, features=two_level, periods=(3,), decays=(0.5,))
    assert isinstance(spn, NegativeLoss) and isinstance(spn.source, NegativeBank) and spn.source is spn.negatives
    perturb_(spn.negatives.models[0])
    generic = NegativeLoss(spn.negatives, weight=0.2, layer_weights={"raw": 1.0}, features=two_level)
    lq = torch.rand(1, 3, 8, 8)
    out = model(lq)
    assert torch.equal(spn(lq, out), generic(lq, out))


# ------------------------------------------------------------------------------------------- uncertainty


def test_uncertainty_weights_and_term_equal_the_documented_formula():
    torch.manual_seed(0)
    out = torch.rand(2, 3, 6, 5, requires_grad=True)
    negs = [torch.rand(2, 3, 6, 5) for _ in range(3)]
    gt = torch.rand(2, 3, 6, 5)
    samples = torch.stack([out.detach(), *negs])
    mean = samples.mean(0)
    u = ((samples - mean) ** 2).mean(0).sqrt().mean(1, keepdim=True)  # population std, then channel mean
    eps = 1e-3
    w = (u + eps) / (u + eps).mean(dim=(2, 3), keepdim=True)
    got = uncertainty_weights(out, negs, eps)
    assert torch.allclose(got, w, atol=1e-6)
    assert torch.allclose(got.mean(dim=(2, 3)), torch.ones(2, 1), atol=1e-6)
    assert not got.requires_grad

    class Fixed(InputNegatives):
        def negatives(self, lq, out, gt=None):
            return negs

    loss = NegativeLoss(Fixed(), weight=0.0, layer_weights={"raw": 1.0}, features=two_level, uncertainty_weight=0.5)
    term = loss(gt, out, gt=gt)
    assert torch.allclose(term, 0.5 * ((out - gt).abs() * w).mean(), rtol=1e-5)
    assert loss.stats()["unc_recon"] == pytest.approx(float(((out.detach() - gt).abs() * w).mean()), rel=1e-5)
    with pytest.raises(SpnirError, match="ground truth"):
        loss(gt, out)


def test_agreeing_samples_give_plain_l1():
    out = torch.rand(1, 3, 4, 4)
    assert torch.allclose(uncertainty_weights(out, [out.clone(), out.clone()]), torch.ones(1, 1, 4, 4))


# ------------------------------------------------------------------------------------------- state, errors


def test_state_round_trip_of_a_ratio_spn_with_uncertainty():
    torch.manual_seed(1)
    model = tiny_net()
    kwargs = dict(weight="auto", layer_weights={"raw": 1.0}, features=two_level, periods=(2, 3), decays=(0.5, 0.8),
                  form="ratio", uncertainty_weight=0.3)
    spn = SPN(model, **kwargs)
    lq, gt = torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8)
    for _ in range(4):
        perturb_(model)
        out = model(lq)
        spn(lq, out, gt=gt, recon=F.l1_loss(out, gt))
        spn.step()
    twin_model = copy.deepcopy(model)
    twin = SPN(twin_model, **kwargs)
    twin.load_state_dict(copy.deepcopy(spn.state_dict()))
    for _ in range(3):
        perturb_(model)
        twin_model.load_state_dict(model.state_dict())
        a_out, b_out = model(lq), twin_model(lq)
        assert torch.equal(spn(lq, a_out, gt=gt, recon=F.l1_loss(a_out, gt)),
                           twin(lq, b_out, gt=gt, recon=F.l1_loss(b_out, gt)))
        assert spn.step() == twin.step()


def test_degraded_gt_loss_state_round_trip():
    steps = [{"type": "noise", "sigma": [0, 20]}]
    a = NegativeLoss(DegradedGTNegatives(steps, seed=5), weight=1.0, layer_weights={"raw": 1.0}, features=two_level)
    gt = torch.rand(1, 3, 8, 8)
    a(gt, gt * 0.9, gt=gt)
    b = NegativeLoss(DegradedGTNegatives(steps, seed=0), weight=1.0, layer_weights={"raw": 1.0}, features=two_level)
    b.load_state_dict(copy.deepcopy(a.state_dict()))
    assert torch.equal(a(gt, gt * 0.9, gt=gt), b(gt, gt * 0.9, gt=gt))


def test_bad_input_errors():
    with pytest.raises(SpnirError, match="form"):
        NegativeLoss(InputNegatives(), layer_weights={"raw": 1.0}, features=two_level, form="triplet")
    with pytest.raises(SpnirError, match="ratio form"):
        NegativeLoss(InputNegatives(), layer_weights={"raw": 1.0}, features=two_level, form="ratio", max_distance=1.0)
    with pytest.raises(SpnirError, match="negative source"):
        NegativeLoss(tiny_net(), layer_weights={"raw": 1.0}, features=two_level)
    with pytest.raises(SpnirError, match="at least one"):
        FrozenNegatives([])
    with pytest.raises(SpnirError, match="count"):
        DegradedGTNegatives([{"type": "noise", "sigma": 5}], count=0)


def test_config_switches_build_each_source():
    from spnir.train.build import build_negative_loss
    from spnir.train.config import load_config

    base = {"model": {"name": "edsr-baseline", "scale": 2, "args": {"num_feat": 4, "num_block": 1}},
            "data": {"train": {"type": "builtin", "degradations": [{"type": "bicubic", "scale": 2}],
                               "patch_size": 16, "batch_size": 2}},
            "optim": {"lr": 1e-3}, "train": {"total_iter": 2},
            "spn": {"enabled": True, "vgg_weights": "random", "layer_weights": {"relu1_1": 1.0}}}
    from spnir.train.build import build_model

    model = build_model(load_config(copy.deepcopy(base))["model"])  # the config's model: its fresh copies fit
    cases = {
        "source=history": NegativeBank,
        "source=input": InputNegatives,
        "source=degraded-gt": DegradedGTNegatives,
    }
    for switch, kind in cases.items():
        extra = ["spn.degradations=[{type: noise, sigma: 5}]"] if "degraded" in switch else []
        config = load_config(copy.deepcopy(base),
                             [f"spn.{switch}", "spn.form=ratio", "spn.uncertainty_weight=0.5", *extra])
        loss = build_negative_loss(config, model, torch.device("cpu"))
        assert isinstance(loss.source, kind) and loss.form == "ratio" and loss.uncertainty_weight == 0.5
    with pytest.raises(SpnirError, match="spn.degradations"):
        build_negative_loss(load_config(copy.deepcopy(base), ["spn.source=degraded-gt"]), model, torch.device("cpu"))
    with pytest.raises(SpnirError, match="spn.frozen"):
        build_negative_loss(load_config(copy.deepcopy(base), ["spn.source=frozen"]), model, torch.device("cpu"))
    with pytest.raises(SpnirError, match="spn.form"):
        load_config(copy.deepcopy(base), ["spn.form=triplet"])
