"""Fresh weights of the negatives (init_decay / neg_start) come from the architecture's own initialisation:
a new instance of the preset, as the official code's build_network gives, for every family."""
from __future__ import annotations

import pytest
import torch
from torch import nn
from train_support import tiny_config

from spnir.archs import create_model
from spnir.negatives import NegativeBank, fresh_instance, reinitialized_copy
from spnir.train.build import build_negative_loss, fresh_models
from spnir.train.config import load_config

# (preset, scale, tiny overrides): one per family
FAMILIES = [
    ("edsr-baseline", 2, dict(num_block=2, num_feat=8)),
    ("swinir-light", 2, dict(depths=(2,), num_heads=(2,), embed_dim=16, img_size=16)),
    ("ffanet", None, dict(groups=1, blocks=1, dim=16)),
    ("dehazeformer-t", None, dict(depths=(1, 1, 1, 1, 1))),
    ("idt", None, dict(img_size=64, embed_dim=8, depths=(1,) * 9, num_heads=(1, 1, 2, 2, 4, 4, 2, 1, 1))),
    ("nafnet-width32", None, dict(width=4, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1))),
]


def _trained(name: str, scale: int | None, overrides: dict) -> nn.Module:
    torch.manual_seed(0)
    model = create_model(name, scale, **overrides)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.5)  # far from any initialisation: a fresh copy cannot inherit it
    return model


def _assert_same_statistics(fresh: nn.Module, reference: nn.Module) -> None:
    """Each parameter tensor has the reference's statistics: constant initialisations exactly, random ones
    within sampling error (std and mean, tensors of at least 256 values)."""
    ref = {k: v.detach() for k, v in reference.named_parameters()}
    for key, value in ((k, v.detach()) for k, v in fresh.named_parameters()):
        expected = ref[key]
        if expected.numel() > 1 and float(expected.std()) == 0.0:
            assert torch.equal(value, expected), key
        elif expected.numel() >= 256:
            std, ref_std = float(value.std()), float(expected.std())
            assert abs(std - ref_std) <= 0.2 * ref_std, (key, std, ref_std)
            assert abs(float(value.mean()) - float(expected.mean())) <= 0.25 * ref_std, key


@pytest.mark.parametrize("name,scale,overrides", FAMILIES, ids=[f[0] for f in FAMILIES])
def test_fresh_negative_has_the_statistics_of_a_new_instance_of_the_preset(name, scale, overrides):
    target = _trained(name, scale, overrides)
    negative = NegativeBank(target, periods=(10,), decays=(0.5,), init_decay=1.0).models[0]  # all fresh
    torch.manual_seed(123)
    reference = create_model(name, scale, **overrides)
    _assert_same_statistics(negative, reference)
    assert any(not torch.equal(a, b) for a, b in zip(negative.parameters(), reference.parameters()))


def test_swinir_fresh_linear_weights_are_trunc_normal_002_not_pytorch_defaults():
    target = _trained(*FAMILIES[1])
    qkv = "layers.0.residual_group.blocks.0.attn.qkv.weight"
    negative = dict(NegativeBank(target, periods=(10,), decays=(0.5,), init_decay=1.0).models[0].state_dict())
    assert float(negative[qkv].std()) == pytest.approx(0.02, rel=0.15)
    defaults = reinitialized_copy(target).state_dict()  # kaiming-uniform: 1/sqrt(3 * 16) = 0.14
    assert float(defaults[qkv].std()) > 0.1


def test_init_decay_mixes_the_fresh_instance_into_the_target():
    target = _trained("edsr-baseline", 2, dict(num_block=1, num_feat=4))
    torch.manual_seed(7)
    fresh = fresh_instance(target)
    torch.manual_seed(7)
    negative = NegativeBank(target, periods=(10,), decays=(0.5,), init_decay=0.1).models[0]
    for (key, neg), t, f in zip(negative.named_parameters(), target.parameters(), fresh.parameters()):
        torch.testing.assert_close(neg, 0.1 * f + 0.9 * t, msg=key)


def test_a_module_that_is_no_preset_falls_back_to_each_layers_reset_parameters():
    torch.manual_seed(0)
    custom = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    assert not hasattr(custom, "spnir_preset")
    torch.manual_seed(5)
    fresh = fresh_instance(custom)
    torch.manual_seed(5)
    expected = reinitialized_copy(custom)
    assert all(torch.equal(a, b) for a, b in zip(fresh.parameters(), expected.parameters()))
    own = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 3, 3, padding=1))
    nn.init.zeros_(own[0].weight)
    bank = NegativeBank(custom, periods=(10,), decays=(0.5,), init_decay=1.0, fresh_model=lambda: own)
    assert torch.equal(bank.models[0][0].weight, own[0].weight)  # fresh_model= gives a custom init


def test_training_builds_each_fresh_copy_from_its_own_seed_and_leaves_the_global_rng_alone():
    config = load_config(tiny_config(), ["spn.init_decay=1.0"])
    state = torch.random.get_rng_state()
    first = fresh_models(config["model"], 3)()
    factory = fresh_models(config["model"], 3)
    again, second = factory(), factory()
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(a, b) for a, b in zip(first.parameters(), again.parameters()))  # same on every rank
    assert not all(torch.equal(a, b) for a, b in zip(first.parameters(), second.parameters()))
    torch.manual_seed(3)
    model = create_model("edsr-baseline", 2, num_feat=4, num_block=1)
    spn = build_negative_loss(config, model, torch.device("cpu"))
    for k, negative in enumerate(spn.negatives.models):
        expected = fresh_models(config["model"], 3)
        for _ in range(k):
            expected()
        assert all(torch.equal(a, b) for a, b in zip(negative.parameters(), expected().parameters()))
