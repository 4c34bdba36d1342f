"""EDSR / SwinIR / NAFNet presets: official parameter counts and state-dict layout, forwards at odd sizes,
the NAFNet local-statistics variant, and the shared pad/crop helper.

Full-size presets are built on the meta device (no memory, no init cost); forwards use tiny overrides.
Numbers below are facts of the official implementations (BasicSR edsr_arch/swinir_arch, SwinIR's
network_swinir, NAFNet's NAFNet_arch), counted with their own classes.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from spnir.archs import create_model, get_preset, list_models
from spnir.archs.nafnet import LocalAvgPool2d
from spnir.archs.padding import crop_to, pad_to_multiple
from spnir.errors import SpnirError

OFFICIAL_PARAMS = {
    ("edsr-baseline", 2): 1_369_859, ("edsr-baseline", 3): 1_554_499, ("edsr-baseline", 4): 1_517_571,
    ("edsr", 2): 40_729_603, ("edsr", 3): 43_680_003, ("edsr", 4): 43_089_923,
    ("swinir-light", 2): 910_152, ("swinir-light", 3): 918_267, ("swinir-light", 4): 929_628,
    ("swinir", 2): 11_752_487, ("swinir", 3): 11_937_127, ("swinir", 4): 11_900_199,
    ("nafnet-width32", None): 17_111_907, ("nafnet-width64", None): 67_888_835,
}
# (number of state-dict entries, a few entries with their official shapes)
OFFICIAL_LAYOUT = {
    ("edsr-baseline", 4): (74, {"body.15.conv2.weight": (64, 64, 3, 3), "upsample.2.weight": (256, 64, 3, 3),
                                "conv_last.weight": (3, 64, 3, 3)}),
    ("edsr", 3): (136, {"body.31.conv1.bias": (256,), "upsample.0.weight": (2304, 256, 3, 3)}),
    ("swinir-light", 2): (366, {
        "layers.3.residual_group.blocks.5.attn_mask": (64, 64, 64),
        "layers.0.residual_group.blocks.0.attn.relative_position_bias_table": (225, 6),
        "layers.0.residual_group.blocks.0.attn.relative_position_index": (64, 64),
        "layers.0.residual_group.blocks.0.mlp.fc1.weight": (120, 60),
        "patch_embed.norm.weight": (60,), "upsample.0.weight": (12, 60, 3, 3)}),
    ("swinir", 4): (550, {
        "layers.5.residual_group.blocks.1.attn_mask": (36, 64, 64),
        "layers.5.residual_group.blocks.1.attn.qkv.weight": (540, 180),
        "conv_before_upsample.0.weight": (64, 180, 3, 3), "upsample.2.weight": (256, 64, 3, 3)}),
    ("swinir", 3): (548, {"upsample.0.weight": (576, 64, 3, 3)}),
    ("nafnet-width32", None): (664, {
        "encoders.3.27.sca.1.weight": (256, 256, 1, 1), "downs.3.weight": (512, 256, 2, 2),
        "ups.0.0.weight": (1024, 512, 1, 1), "decoders.3.0.beta": (1, 32, 1, 1), "middle_blks.0.norm1.weight": (512,)}),
}
TINY = {
    "edsr-baseline": dict(num_block=2, num_feat=8),
    "edsr": dict(num_block=2, num_feat=8),
    "swinir-light": dict(depths=(2,), num_heads=(2,), embed_dim=8, img_size=16),
    "swinir": dict(depths=(2,), num_heads=(2,), embed_dim=8, img_size=16),
    "nafnet-width32": dict(width=4, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1)),
    "nafnet-width64": dict(width=4, enc_blk_nums=(1, 2), dec_blk_nums=(1, 1)),
}


def meta_model(name: str, scale: int | None, **overrides):
    with torch.device("meta"):
        return create_model(name, scale, **overrides)


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


def test_presets_are_registered():
    assert set(TINY) <= set(list_models())
    assert get_preset("swinir").scales == (2, 3, 4)
    assert get_preset("nafnet-width64").scales is None


@pytest.mark.parametrize("name,scale", sorted(OFFICIAL_PARAMS, key=str))
def test_parameter_count_equals_official(name, scale):
    assert count(meta_model(name, scale)) == OFFICIAL_PARAMS[name, scale]
    assert get_preset(name).params[scale] == OFFICIAL_PARAMS[name, scale]


@pytest.mark.parametrize("name,scale", sorted(OFFICIAL_LAYOUT, key=str))
def test_state_dict_layout_equals_official(name, scale):
    size, shapes = OFFICIAL_LAYOUT[name, scale]
    state = meta_model(name, scale).state_dict()
    assert len(state) == size
    assert {k: tuple(state[k].shape) for k in shapes} == shapes


def test_swinir_derived_buffers_follow_img_size():
    state = meta_model("swinir", 2, img_size=64).state_dict()
    assert tuple(state["layers.0.residual_group.blocks.1.attn_mask"].shape) == (64, 64, 64)
    assert "layers.0.residual_group.blocks.0.attn_mask" not in state  # unshifted blocks store no mask
    index = create_model("swinir-light", 2, **TINY["swinir-light"]).state_dict()[
        "layers.0.residual_group.blocks.0.attn.relative_position_index"]
    assert index.dtype == torch.int64 and index[0, 0] == 112 and index.max() == 224 and index.min() == 0


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize("size", [(13, 21), (8, 8), (3, 5)])
def test_forward_at_odd_sizes(name, size):
    preset = get_preset(name)
    scale = 3 if preset.scales else None
    model = create_model(name, scale, **TINY[name]).eval()
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = model(x)
    factor = scale or 1
    assert y.shape == (2, 3, size[0] * factor, size[1] * factor)
    assert torch.isfinite(y).all()


def test_edsr_takes_unit_range_and_adds_back_the_mean():
    model = create_model("edsr-baseline", 2, **TINY["edsr-baseline"])
    for p in model.parameters():
        torch.nn.init.zeros_(p)
    y = model(torch.rand(1, 3, 5, 7))
    expected = torch.tensor([0.4488, 0.4371, 0.4040]).view(1, 3, 1, 1).expand_as(y)
    torch.testing.assert_close(y, expected)


def test_swinir_output_does_not_depend_on_img_size():
    a = create_model("swinir", 2, **TINY["swinir"]).eval()
    b = create_model("swinir", 2, **{**TINY["swinir"], "img_size": 24}).eval()
    own = b.state_dict()
    b.load_state_dict({k: (own[k] if "attn_mask" in k else v) for k, v in a.state_dict().items()})
    x = torch.rand(1, 3, 16, 16)  # equal to a's img_size: a uses its stored mask, b computes one
    with torch.no_grad():
        torch.testing.assert_close(a(x), b(x))


def test_swinir_padding_is_invisible_for_window_multiples():
    model = create_model("swinir-light", 2, **TINY["swinir-light"]).eval()
    x = torch.rand(1, 3, 16, 24)
    with torch.no_grad():
        whole = model(x)
        cropped = model(x[..., :13, :19])  # reflect-padded back to 16 x 24 internally
    assert cropped.shape == (1, 3, 26, 38)
    assert torch.isfinite(cropped).all() and not torch.equal(whole[..., :26, :38], cropped)


def test_swinir_rejects_bad_configuration():
    with pytest.raises(SpnirError, match="img_size"):
        create_model("swinir", 2, img_size=4)
    with pytest.raises(SpnirError, match="num_heads"):
        create_model("swinir", 2, depths=(2, 2), num_heads=(2,))


def test_sr_scale_errors():
    with pytest.raises(SpnirError, match="needs scale set to one of"):
        create_model("edsr", None)
    with pytest.raises(SpnirError, match="supports scales"):
        create_model("edsr-baseline", 8)
    with pytest.raises(SpnirError, match="does not upscale"):
        create_model("nafnet-width32", 2)


def test_local_avg_pool_is_a_replicate_padded_box_mean():
    x = torch.rand(1, 2, 9, 12)
    out = LocalAvgPool2d((4, 5))(x)
    assert out.shape == x.shape
    # the 6 x 8 valid box means sit at rows 1..6 and columns 2..9 (split padding), borders replicate
    box = torch.stack([x[..., i:i + 4, j:j + 5].mean((-2, -1)) for i in range(6) for j in range(8)], -1)
    valid = box.view(1, 2, 6, 8)
    torch.testing.assert_close(out[..., 1:7, 2:10], valid)
    torch.testing.assert_close(out[..., 0, 2:10], valid[..., 0, :])  # replicated border
    torch.testing.assert_close(LocalAvgPool2d((9, 12))(x), x.mean((-2, -1), keepdim=True))


def test_nafnet_local_equals_global_up_to_one_and_a_half_train_sizes():
    tiny = TINY["nafnet-width32"]
    plain = create_model("nafnet-width32", **tiny).eval()
    for name, p in plain.named_parameters():
        if name.endswith(("beta", "gamma")):  # zero at init: the blocks would be identities
            torch.nn.init.normal_(p)
    local = create_model("nafnet-width32", local=True, train_size=16, **tiny).eval()
    local.load_state_dict(plain.state_dict())
    kernels = [m.kernel_size for m in local.modules() if isinstance(m, LocalAvgPool2d)]
    assert kernels == [(24, 24), (12, 12), (12, 12), (24, 24), (6, 6)]  # enc0, enc1, dec0, dec1, middle
    with torch.no_grad():
        small, large = torch.rand(1, 3, 24, 21), torch.rand(1, 3, 41, 50)
        torch.testing.assert_close(local(small), plain(small))
        assert (local(large) - plain(large)).abs().max() > 1e-4


def test_pad_to_multiple_and_crop():
    x = torch.rand(1, 3, 10, 13)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 3, 16, 16)
    torch.testing.assert_close(padded, F.pad(x, (0, 3, 0, 6), mode="reflect"))
    torch.testing.assert_close(crop_to(padded, 10, 13), x)
    assert pad_to_multiple(x, 1) is x
    zeros = pad_to_multiple(x, 4, "constant")
    assert zeros.shape == (1, 3, 12, 16) and zeros[..., 10:, :].abs().sum() == 0


def test_reflect_padding_wider_than_the_image():
    x = torch.arange(3.0).view(1, 1, 1, 3)
    padded = pad_to_multiple(x, 8)
    assert padded.shape == (1, 1, 8, 8)
    assert padded[0, 0, 0].tolist() == [0, 1, 2, 1, 0, 1, 2, 1]  # mirrored, then mirrored again
    assert (padded == padded[:, :, :1]).all()  # a one-pixel side is replicated
