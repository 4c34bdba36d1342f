"""FFA-Net / DehazeFormer / IDT presets: official parameter counts and state-dict layout, input conventions,
forwards at odd sizes, checkpoint round trips and each project's released file format.

Full-size presets are built on the meta device; forwards use small inputs and, where the preset is slow,
reduced overrides. The numbers are facts of the official implementations (zhilin007/FFA-Net models/FFA.py,
IDKiro/DehazeFormer models/dehazeformer.py, jiexiaou/IDT model.py), counted with their own classes.
"""
from __future__ import annotations

import argparse
import pickle

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from spnir.archs import create_model, get_preset
from spnir.archs.dehazeformer import window_padding_fits
from spnir.archs.ffanet import FFA_MEAN, FFA_STD
from spnir.archs.idt import inverse_distance_weights, patch_starts
from spnir.archs.model_files import load_checkpoint, model_from_checkpoint, save_model_checkpoint
from spnir.errors import SpnirError

OFFICIAL_PARAMS = {
    "ffanet": 4_455_913,
    "dehazeformer-t": 687_404,
    "dehazeformer-s": 1_284_884,
    "dehazeformer-b": 2_517_612,
    "idt": 16_416_463,
}
# (number of state-dict entries, a few entries with their official shapes)
OFFICIAL_LAYOUT = {
    "ffanet": (704, {"g3.gp.18.palayer.pa.2.weight": (1, 8, 1, 1), "g1.gp.19.weight": (64, 64, 3, 3),
                     "ca.1.weight": (4, 192, 1, 1), "ca.3.weight": (192, 4, 1, 1), "post.1.weight": (3, 64, 3, 3)}),
    "dehazeformer-t": (258, {
        "layer2.blocks.3.attn.attn.relative_positions": (64, 64, 2), "layer2.blocks.3.attn.QK.weight": (96, 48, 1, 1),
        "layer2.blocks.3.norm1.meta1.weight": (48, 1, 1, 1), "layer3.blocks.0.attn.attn.meta.2.weight": (6, 256),
        "fusion1.mlp.2.weight": (96, 6, 1, 1), "patch_unembed.proj.0.weight": (4, 24, 3, 3),
        "patch_split1.proj.0.weight": (192, 96, 1, 1)}),
    "dehazeformer-s": (496, {"layer1.blocks.7.attn.QK.weight": (48, 24, 1, 1),
                             "layer3.blocks.1.attn.conv.weight": (96, 1, 5, 5)}),
    "dehazeformer-b": (972, {"layer1.blocks.15.attn.QK.weight": (48, 24, 1, 1),
                             "layer5.blocks.7.mlp.mlp.0.weight": (48, 24, 1, 1),
                             "fusion2.mlp.0.weight": (4, 24, 1, 1)}),
    "idt": (571, {
        "encoderlayer_0.blocks.3.attn.relative_position_bias_table": (961, 1),
        "encoderlayer_0.blocks.3.attn.Position_Extract.0.weight": (64, 1, 5, 5),
        "encoderlayer_3.blocks.2.attn.Position_Extract.0.weight": (64, 1, 3, 3),
        "encoderlayer_0.blocks.0.attn.relative_position_bias_table": (225, 1),
        "bottle.blocks.0.attn.qkv.to_kv.weight": (1536, 512),
        "decoderlayer_0.blocks.1.mlp.linear1.0.weight": (256, 512),
        "upsample_1.deconv.0.weight": (512, 128, 2, 2), "dowsample_3.conv.0.weight": (512, 256, 4, 4),
        "input_proj.proj.0.weight": (32, 3, 3, 3), "output_proj.proj.0.weight": (3, 64, 3, 3)}),
}
TINY = {
    "ffanet": dict(blocks=1),
    "dehazeformer-t": dict(depths=(2, 2, 2, 1, 1)),
    "dehazeformer-s": dict(depths=(2, 2, 2, 1, 1)),
    "dehazeformer-b": dict(depths=(1, 2, 2, 1, 1)),
    "idt": dict(img_size=64, embed_dim=8, depths=(1,) * 9, num_heads=(1, 1, 2, 2, 4, 4, 2, 1, 1)),
}


def meta_model(name: str, **overrides):
    with torch.device("meta"):
        return create_model(name, **overrides)


def tiny(name: str):
    return create_model(name, **TINY[name]).eval()


def count(model) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", sorted(OFFICIAL_PARAMS))
def test_parameter_count_equals_official(name):
    assert count(meta_model(name)) == OFFICIAL_PARAMS[name]
    assert get_preset(name).params == {None: OFFICIAL_PARAMS[name]}


@pytest.mark.parametrize("name", sorted(OFFICIAL_LAYOUT))
def test_state_dict_layout_equals_official(name):
    size, shapes = OFFICIAL_LAYOUT[name]
    state = meta_model(name).state_dict()
    assert len(state) == size
    assert {key: tuple(state[key].shape) for key in shapes} == shapes


def test_presets_are_restoration_models_without_scale():
    tasks = {name: get_preset(name).task for name in OFFICIAL_PARAMS}
    assert tasks == {"ffanet": "dehaze", "dehazeformer-t": "dehaze", "dehazeformer-s": "dehaze",
                     "dehazeformer-b": "dehaze", "idt": "derain"}
    assert all(get_preset(name).scales is None for name in OFFICIAL_PARAMS)
    with pytest.raises(SpnirError, match="does not upscale"):
        create_model("ffanet", scale=2)


@pytest.mark.parametrize("name,size", [
    ("ffanet", (24, 20)), ("dehazeformer-t", (37, 29)), ("dehazeformer-s", (30, 41)),
    ("dehazeformer-b", (26, 33)), ("idt", (70, 83)), ("idt", (24, 20)), ("dehazeformer-t", (5, 7)),
])
def test_forward_at_odd_sizes(name, size):
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = tiny(name)(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_full_ffanet_forward_on_a_small_image():
    x = torch.rand(1, 3, 24, 20)
    with torch.no_grad():
        y = create_model("ffanet").eval()(x)
    assert y.shape == x.shape and torch.isfinite(y).all()


def test_ffanet_normalises_its_input_like_the_official_release():
    model = tiny("ffanet")
    raw = create_model("ffanet", **TINY["ffanet"], input_norm=False).eval()
    raw.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 17, 23)
    normalised = (x - torch.tensor(FFA_MEAN).view(1, 3, 1, 1)) / torch.tensor(FFA_STD).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(x), raw(normalised))


def test_dehazeformer_maps_unit_range_to_the_official_signed_range():
    model = tiny("dehazeformer-t")
    signed = create_model("dehazeformer-t", **TINY["dehazeformer-t"], signed_range=False).eval()
    signed.load_state_dict(model.state_dict())
    x = torch.rand(1, 3, 32, 40)
    with torch.no_grad():
        torch.testing.assert_close(model(x), signed(x * 2 - 1) * 0.5 + 0.5)


def test_dehazeformer_pads_like_the_official_forward():
    # 37x29 is reflect-padded to 40x32 (multiples of 4) and cropped back, nothing else.
    model = tiny("dehazeformer-s")
    x = torch.rand(1, 3, 37, 29)
    with torch.no_grad():
        padded = model(F.pad(x, (0, 3, 0, 3), mode="reflect"))
        torch.testing.assert_close(model(x), padded[..., :37, :29])


def test_window_padding_fits_where_the_official_code_runs():
    # The official DehazeFormer runs on padded sides of 28 and more (1/4 scale >= 7) with window 8.
    assert [side for side in range(1, 12) if window_padding_fits(side, 8)] == [7, 8, 9, 10, 11]


def test_idt_patch_layout_follows_the_official_full_size_split():
    assert patch_starts(150, 128, 20) == [0, 22]
    assert patch_starts(236, 128, 20) == [0, 108]
    assert patch_starts(300, 128, 20) == [0, 108, 172]
    assert patch_starts(128, 128, 20) == [0]  # the official split fails here; one patch covers it
    weights = inverse_distance_weights(128)
    assert weights.shape == (128, 128)
    assert weights[64, 64] == pytest.approx(1 / np.sqrt(1e-3), rel=1e-6)
    assert weights[0, 0] == pytest.approx(1 / np.sqrt(2 * 64**2 + 1e-3), rel=1e-6)


def test_idt_blends_overlapping_patches():
    model = tiny("idt")
    x = torch.rand(1, 3, 64, 90)
    with torch.no_grad():
        y = model(x)
        first, last = model.forward_patch(x[..., :64]), model.forward_patch(x[..., 26:])
    # Columns only one patch covers are that patch's output; patches start at 0 and 26.
    torch.testing.assert_close(y[..., :26], first[..., :26])
    torch.testing.assert_close(y[..., 64:], last[..., 38:])
    overlap = y[..., 26:64]
    assert torch.all(overlap >= torch.minimum(first[..., 26:], last[..., :38]) - 1e-6)
    assert torch.all(overlap <= torch.maximum(first[..., 26:], last[..., :38]) + 1e-6)


def test_idt_rejects_a_size_without_whole_windows_at_one_eighth():
    with pytest.raises(ValueError, match="multiple of 64"):
        create_model("idt", img_size=96)


@pytest.mark.parametrize("name", sorted(TINY))
def test_checkpoint_round_trip(tmp_path, name):
    model = tiny(name)
    path = save_model_checkpoint(model, tmp_path / f"{name}.pth", meta={"iteration": 3})
    restored = model_from_checkpoint(path).eval()
    size = (64, 64) if name == "idt" else (29, 31)
    x = torch.rand(1, 3, *size)
    with torch.no_grad():
        torch.testing.assert_close(restored(x), model(x), rtol=0, atol=0)


def _prefixed(model) -> dict[str, torch.Tensor]:
    return {f"module.{key}": value.clone() for key, value in model.state_dict().items()}


def _assert_same_weights(a, b):
    for (key, value), other in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(value, other), key


def test_ffanet_release_format_with_numpy_metrics(tmp_path):
    # As FFA-Net's main.py saves it: DataParallel weights plus numpy float64 metrics (np.mean of lists).
    source = tiny("ffanet")
    path = tmp_path / "its_train_ffa_3_19.pk"
    torch.save({"step": 5000, "max_psnr": np.float64(36.39), "max_ssim": np.float64(0.9886),
                "ssims": [np.float64(0.98)], "psnrs": [np.float64(35.2)], "losses": [0.012],
                "model": _prefixed(source)}, path)
    with pytest.raises(pickle.UnpicklingError):
        torch.load(path, weights_only=True)  # a plain safe load refuses the numpy scalars
    target = create_model("ffanet", **TINY["ffanet"])
    load_checkpoint(target, path)
    _assert_same_weights(source, target)


def test_a_pickled_object_beside_the_weights_is_refused(tmp_path):
    path = tmp_path / "ffa_with_options.pk"
    torch.save({"model": _prefixed(tiny("ffanet")), "opt": argparse.Namespace(lr=1e-4)}, path)
    with pytest.raises(SpnirError, match="Namespace"):
        load_checkpoint(create_model("ffanet", **TINY["ffanet"]), path)


def test_dehazeformer_release_format(tmp_path):
    # As DehazeFormer's train.py saves it: {"state_dict": DataParallel weights}.
    source = tiny("dehazeformer-t")
    path = tmp_path / "dehazeformer-t.pth"
    torch.save({"state_dict": _prefixed(source)}, path)
    target = create_model("dehazeformer-t", **TINY["dehazeformer-t"])
    load_checkpoint(target, path)
    _assert_same_weights(source, target)


def test_idt_release_format(tmp_path):
    # As IDT's train_derain.py saves it: the bare DataParallel state_dict.
    source = tiny("idt")
    path = tmp_path / "net_latest.pth"
    torch.save(_prefixed(source), path)
    target = create_model("idt", **TINY["idt"])
    load_checkpoint(target, path)
    _assert_same_weights(source, target)


def test_checkpoint_of_another_dehazeformer_names_the_differences(tmp_path):
    path = tmp_path / "dehazeformer-t.pth"
    torch.save({"state_dict": _prefixed(tiny("dehazeformer-t"))}, path)
    with pytest.raises(SpnirError, match=r"unexpected keys \(layer1.blocks.1"):
        load_checkpoint(create_model("dehazeformer-b", **TINY["dehazeformer-b"]), path)
