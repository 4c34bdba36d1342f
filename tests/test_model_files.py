"""Checkpoint loading: spnir's own format (torch and safetensors), BasicSR / DataParallel / wrapper layouts
written here in the official formats, numpy scalars beside weights, and the errors for files that do not fit.
"""
from __future__ import annotations

import collections

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from spnir.archs import create_model
from spnir.archs.model_files import (
    load_checkpoint,
    model_from_checkpoint,
    read_checkpoint,
    save_model_checkpoint,
)
from spnir.errors import SpnirError

TINY_EDSR = dict(num_block=2, num_feat=8)
TINY_SWINIR = dict(depths=(2,), num_heads=(2,), embed_dim=8, img_size=16)


def tiny_edsr(scale: int = 2):
    return create_model("edsr-baseline", scale, **TINY_EDSR).eval()


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_spnir_checkpoint_round_trip(tmp_path, suffix):
    model = create_model("swinir-light", 3, **TINY_SWINIR).eval()
    path = save_model_checkpoint(model, tmp_path / f"model{suffix}", meta={"iter": 10, "psnr": 30.5})
    content = read_checkpoint(path)
    assert content["format"] == "spnir-model" and content["version"] == 1
    assert content["preset"] == {"name": "swinir-light", "scale": 3,
                                 "overrides": {"depths": [2], "num_heads": [2], "embed_dim": 8, "img_size": 16}}
    assert content["meta"] == {"iter": 10, "psnr": 30.5}
    rebuilt = model_from_checkpoint(path).eval()
    assert same_weights(model, rebuilt)
    x = torch.rand(1, 3, 11, 9)
    with torch.no_grad():
        assert torch.equal(model(x), rebuilt(x))


def test_model_from_checkpoint_takes_test_time_overrides(tmp_path):
    model = create_model("nafnet-width32", width=4, enc_blk_nums=(1,), dec_blk_nums=(1,))
    path = save_model_checkpoint(model, tmp_path / "naf.pth")
    local = model_from_checkpoint(path, local=True, train_size=16)
    assert local.spnir_preset["overrides"]["local"] is True
    assert same_weights(model, local)


def test_saving_needs_a_preset_model(tmp_path):
    with pytest.raises(SpnirError, match="create_model"):
        save_model_checkpoint(torch.nn.Conv2d(3, 3, 1), tmp_path / "x.pth")


def test_basicsr_params_and_params_ema(tmp_path):
    plain, ema = tiny_edsr(), tiny_edsr()
    path = tmp_path / "basicsr.pth"
    torch.save({"params": plain.state_dict(), "params_ema": ema.state_dict()}, path)
    target = tiny_edsr()
    load_checkpoint(target, path)  # default: params, as BasicSR's load_network / test options
    assert same_weights(target, plain)
    load_checkpoint(target, path, key="params_ema")
    assert same_weights(target, ema)
    only_ema = tmp_path / "ema_only.pth"
    torch.save({"params_ema": ema.state_dict()}, only_ema)
    load_checkpoint(target := tiny_edsr(), only_ema)
    assert same_weights(target, ema)
    with pytest.raises(SpnirError, match="no entry 'params_g'.*'params'"):
        load_checkpoint(target, path, key="params_g")


def test_dataparallel_prefix_and_wrapper_entry(tmp_path):
    source = tiny_edsr()
    path = tmp_path / "wrapped.pth"
    torch.save({"state_dict": collections.OrderedDict(("module." + k, v) for k, v in source.state_dict().items()),
                "epoch": 7}, path)
    load_checkpoint(target := tiny_edsr(), path)
    assert same_weights(target, source)


def test_numpy_scalars_beside_weights_are_allowed(tmp_path):
    # FFA-Net's releases: {'step', 'max_psnr', 'max_ssim', 'ssims', 'psnrs', 'model'} with numpy float64 metrics
    source = tiny_edsr()
    path = tmp_path / "ffa_like.pk"
    torch.save({"step": 5000, "max_psnr": np.float64(36.39), "max_ssim": np.float32(0.98),
                "psnrs": [np.float64(30.1)], "ssims": [np.int64(1)],
                "model": {"module." + k: v for k, v in source.state_dict().items()}}, path)
    load_checkpoint(target := tiny_edsr(), path)
    assert same_weights(target, source)


class NotWeights:
    pass


def test_pickled_objects_are_refused_with_an_explanation(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"params": tiny_edsr().state_dict(), "opt": NotWeights()}, path)
    with pytest.raises(SpnirError, match=r"refused: the file pickles the Python object .*NotWeights.*weights-only"):
        load_checkpoint(tiny_edsr(), path)
    array_path = tmp_path / "object_array.pth"
    torch.save({"params": tiny_edsr().state_dict(), "names": np.array(["a"], dtype=object)}, array_path)
    with pytest.raises(SpnirError, match="refused: the file pickles"):
        load_checkpoint(tiny_edsr(), array_path)


def test_plain_safetensors_file(tmp_path):
    source = tiny_edsr()
    path = tmp_path / "weights.safetensors"
    save_file(source.state_dict(), str(path))
    load_checkpoint(target := tiny_edsr(), path)
    assert same_weights(target, source)


def test_swinir_checkpoint_from_another_img_size_loads(tmp_path):
    source = create_model("swinir", 2, **{**TINY_SWINIR, "img_size": 24})
    path = tmp_path / "s24.pth"
    torch.save({"params": source.state_dict()}, path)
    target = create_model("swinir", 2, **TINY_SWINIR)
    load_checkpoint(target, path)
    mask = "layers.0.residual_group.blocks.1.attn_mask"
    assert target.state_dict()[mask].shape == (4, 64, 64)  # its own, derived from img_size 16
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items() if "attn_mask" not in k)


def test_checkpoint_of_another_preset_names_keys_and_guesses(tmp_path):
    path = tmp_path / "edsr_x2.pth"
    torch.save({"params": create_model("edsr-baseline", 2).state_dict()}, path)
    with pytest.raises(SpnirError) as info:
        load_checkpoint(create_model("swinir-light", 2, **TINY_SWINIR), path)
    message = str(info.value)
    assert "keys missing from the file" in message and "patch_embed.norm.weight" in message
    assert "unexpected keys" in message and "body.0.conv1.weight" in message
    assert "it fits edsr-baseline x2" in message


def test_wrong_scale_names_shapes_and_the_right_scale(tmp_path):
    path = tmp_path / "edsr_x4.pth"
    torch.save({"params": create_model("edsr-baseline", 4).state_dict()}, path)
    with pytest.raises(SpnirError) as info:
        load_checkpoint(create_model("edsr-baseline", 3), path)
    message = str(info.value)
    assert "preset 'edsr-baseline' x3" in message
    assert "upsample.0.weight: file (256, 64, 3, 3) vs model (576, 64, 3, 3)" in message
    assert "it fits edsr-baseline x4" in message


def test_non_strict_tolerates_missing_keys_not_shapes(tmp_path):
    source = tiny_edsr()
    partial = {k: v for k, v in source.state_dict().items() if not k.startswith("conv_last")}
    path = tmp_path / "partial.pth"
    torch.save(partial, path)
    with pytest.raises(SpnirError, match="keys missing"):
        load_checkpoint(tiny_edsr(), path)
    result = load_checkpoint(tiny_edsr(), path, strict=False)
    assert sorted(result.missing_keys) == ["conv_last.bias", "conv_last.weight"]
    torch.save({"params": tiny_edsr(3).state_dict()}, path)
    with pytest.raises(SpnirError, match="shapes differ"):
        load_checkpoint(tiny_edsr(), path, strict=False)


def test_unreadable_and_odd_files(tmp_path):
    with pytest.raises(SpnirError, match="no such checkpoint"):
        load_checkpoint(tiny_edsr(), tmp_path / "missing.pth")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"this is not a checkpoint")
    with pytest.raises(SpnirError, match="garbage.pth"):
        load_checkpoint(tiny_edsr(), garbage)
    tensor_file = tmp_path / "tensor.pth"
    torch.save(torch.zeros(3), tensor_file)
    with pytest.raises(SpnirError, match="holds a Tensor, expected a dict"):
        load_checkpoint(tiny_edsr(), tensor_file)
    metrics_only = tmp_path / "metrics.pth"
    torch.save({"epoch": 3, "psnr": 30.0}, metrics_only)
    with pytest.raises(SpnirError, match="does not look like a state dict.*'epoch'"):
        load_checkpoint(tiny_edsr(), metrics_only)
    bad_st = tmp_path / "bad.safetensors"
    bad_st.write_bytes(b"\x00" * 16)
    with pytest.raises(SpnirError, match="safetensors"):
        load_checkpoint(tiny_edsr(), bad_st)


def test_foreign_file_is_not_a_spnir_checkpoint(tmp_path):
    path = tmp_path / "plain.pth"
    torch.save(tiny_edsr().state_dict(), path)
    with pytest.raises(SpnirError, match="not a spnir model checkpoint"):
        model_from_checkpoint(path)


def test_newer_format_version_is_refused(tmp_path):
    path = save_model_checkpoint(tiny_edsr(), tmp_path / "m.pth")
    content = torch.load(path, weights_only=True)
    content["version"] = 99
    content.pop("checksum")  # an edited file without a checksum, as an older or other writer leaves it
    torch.save(content, path)
    with pytest.raises(SpnirError, match="version 99"):
        model_from_checkpoint(path)


def test_numpy_scalar_allow_list_under_numpy_1_and_2():
    from types import SimpleNamespace

    from spnir.archs.model_files import NUMPY_SCALAR_GLOBALS, numpy_scalar_allow_list

    scalar = NUMPY_SCALAR_GLOBALS[0][0]
    numpy1 = SimpleNamespace(core=SimpleNamespace(multiarray=SimpleNamespace(scalar=scalar)), dtype=np.dtype)
    for allowed in (numpy_scalar_allow_list(numpy1), NUMPY_SCALAR_GLOBALS):
        named = {entry[1] for entry in allowed if isinstance(entry, tuple)}
        assert named == {"numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar"}
        assert all(entry[0] is scalar for entry in allowed if isinstance(entry, tuple))
        classes = [entry for entry in allowed if not isinstance(entry, tuple)]
        assert np.dtype in classes and type(np.dtype("float64")) in classes
        assert type(np.dtype(object)) not in classes and len(allowed) == 2 + 1 + 12


def test_foreign_weights_without_a_preset_name_the_argument_of_the_caller(tmp_path, capsys):
    from spnir.archs.model_files import model_for_inference
    from spnir.cli import main
    from spnir.imageio import save_image

    weights = tmp_path / "plain.pth"
    torch.save(create_model("edsr-baseline", 2, num_block=1, num_feat=4).state_dict(), weights)
    with pytest.raises(SpnirError, match="name its preset with preset= for official"):
        model_for_inference(weights)
    save_image(torch.rand(3, 8, 8), tmp_path / "x.png")
    assert main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(weights), "--out", str(tmp_path / "o")]) == 2
    assert "name its preset with --model for official" in capsys.readouterr().err
    model, scale = model_for_inference(weights, "edsr-baseline", 2, overrides={"num_block": 1, "num_feat": 4})
    assert scale == 2
