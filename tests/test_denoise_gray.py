"""Denoising data and the 1-channel path: noise protocols, grayscale conversion, gray training data, VGG."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from spnir.cli import main
from spnir.data.datasets import CleanImages, Grayscale
from spnir.errors import SpnirError
from spnir.evaluation import add_gaussian_noise
from spnir.features import VGGFeatures
from spnir.imageio import to_gray
from spnir.train.build import build_train_data
from spnir.train.config import load_config


def test_float_noise_is_kairs_draw_unclipped_and_8bit_is_clipped_and_rounded() -> None:
    gt = torch.full((1, 6, 5), 0.98)
    noisy = add_gaussian_noise(gt, 25, seed=0)
    expected = np.float32(0.98) + np.random.RandomState(0).normal(0, 25 / 255, (6, 5, 1))
    assert torch.allclose(noisy, torch.from_numpy(expected).permute(2, 0, 1).float())
    assert noisy.max() > 1  # not clipped
    eight = add_gaussian_noise(gt, 25, seed=0, protocol="8bit")
    assert eight.max() <= 1 and torch.equal(eight, (eight * 255).round() / 255)
    with pytest.raises(SpnirError, match="0..255"):
        add_gaussian_noise(gt, 300)


def test_to_gray_keeps_gray_files_exact_and_uses_rgb2gray_for_colour() -> None:
    g = torch.randint(0, 256, (1, 4, 4)).float() / 255
    assert torch.equal(to_gray(g.expand(3, -1, -1)), g)
    rgb = torch.tensor([[[1.0]], [[0.0]], [[0.0]]])
    assert to_gray(rgb).item() == pytest.approx(round(0.298936021293775 * 255) / 255)


def test_vgg_sees_a_gray_image_replicated() -> None:
    vgg = VGGFeatures("vgg16", ["relu1_2"], vgg_weights="random", seed=0)
    x = torch.rand(1, 1, 8, 8)
    assert torch.allclose(vgg(x)["relu1_2"], vgg(x.expand(-1, 3, -1, -1))["relu1_2"])


def test_gray_training_data_and_extra_sources(tmp_path) -> None:
    folder = tmp_path / "imgs"
    folder.mkdir()
    Image.fromarray(np.random.RandomState(1).randint(0, 255, (40, 40, 3), dtype=np.uint8)).save(folder / "a.png")
    config = load_config({
        "model": {"name": "dncnn", "args": {"num_conv": 3, "num_feat": 4}},
        "data": {"train": {"type": "builtin", "extra_gt": [str(folder)], "channels": 1, "patch_size": 32,
                           "batch_size": 2, "degradations": [{"type": "noise", "sigma": 25}], "workers": 0}},
        "optim": {"lr": 1e-4}, "train": {"total_iter": 1},
    })
    data = build_train_data(config)
    assert len(data.source) == len(CleanImages.builtin("train")) + 1
    item = data[len(data.source) - 1]
    assert item["gt"].shape == (1, 32, 32) and item["lq"].shape == (1, 32, 32)
    assert isinstance(data.source, Grayscale)


def test_eval_denoise_on_gray_and_colour_images(tmp_path) -> None:
    from spnir.archs import create_model, save_model_checkpoint

    folder = tmp_path / "set"
    folder.mkdir()
    Image.fromarray(np.full((16, 16), 120, np.uint8)).save(folder / "gray.png")
    Image.fromarray(np.random.RandomState(0).randint(0, 255, (16, 16, 3), dtype=np.uint8)).save(folder / "rgb.png")
    ckpt = save_model_checkpoint(create_model("dncnn", num_conv=3, num_feat=4), tmp_path / "m.safetensors")
    out = tmp_path / "r.json"
    assert main(["eval", "--checkpoint", str(ckpt), "--task", "denoise", "--sigma", "15", "--data", str(folder),
                 "--json", str(out), "--no-progress"]) == 0
    import json

    assert json.loads(out.read_text())["set"]["images"] == 2
    assert main(["eval", "--checkpoint", str(ckpt), "--task", "sr", "--scale", "2", "--sigma", "15",
                 "--data", str(folder), "--no-progress"]) == 2


def test_restore_keeps_a_gray_image_gray_for_a_one_channel_model(tmp_path) -> None:
    from spnir.archs import create_model, save_model_checkpoint

    Image.fromarray(np.random.RandomState(0).randint(0, 255, (12, 12, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    ckpt = save_model_checkpoint(create_model("dncnn", num_conv=3, num_feat=4), tmp_path / "m.safetensors")
    assert main(["restore", "--checkpoint", str(ckpt), str(tmp_path / "in.png"), "--out", str(tmp_path / "out"),
                 "--no-progress"]) == 0
    with Image.open(tmp_path / "out" / "in.png") as img:
        assert img.mode == "L" and img.size == (12, 12)
