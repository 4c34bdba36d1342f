"""VGGFeatures: layer names, truncation, torchvision-format files, the hub cache and `spnir weights`."""
from __future__ import annotations

import pytest
import torch

from spnir import SpnirError, VGGFeatures
from spnir.cli import main
from spnir.features import layer_names
from spnir.weights.vgg import cached_vgg_path, install_vgg_weights


def test_layer_names_match_torchvision_indices():
    names16, names19 = layer_names("vgg16"), layer_names("vgg19")
    assert len(names16) == 31 and len(names19) == 37  # len(torchvision vgg.features)
    assert names16[:5] == ["conv1_1", "relu1_1", "conv1_2", "relu1_2", "pool1"]
    assert names16.index("relu3_3") == 15 and names19.index("relu5_4") == 35


def test_stops_after_last_requested_layer():
    vgg = VGGFeatures("vgg16", ["relu2_2", "relu1_1"], vgg_weights="random")
    assert len(vgg.body) == 9
    feats = vgg(torch.rand(2, 3, 20, 18))
    assert set(feats) == {"relu1_1", "relu2_2"}
    assert feats["relu2_2"].shape == (2, 128, 10, 9)
    assert "random" in vgg.feature_space


def test_random_weights_are_seeded():
    a = VGGFeatures("vgg19", ["relu1_1"], vgg_weights="random", seed=3)
    b = VGGFeatures("vgg19", ["relu1_1"], vgg_weights="random", seed=3)
    c = VGGFeatures("vgg19", ["relu1_1"], vgg_weights="random", seed=4)
    assert torch.equal(a.body[0].weight, b.body[0].weight)
    assert not torch.equal(a.body[0].weight, c.body[0].weight)


def _torchvision_style_file(tmp_path, kind, name):
    """A torchvision-format state dict (features.N.* plus a classifier) from random VGG weights."""
    full = VGGFeatures(kind, [layer_names(kind)[-1]], vgg_weights="random", seed=7)
    state = {f"features.{k}": v for k, v in full.body.state_dict().items()}
    state["classifier.0.weight"] = torch.zeros(2, 2)
    path = tmp_path / name
    torch.save(state, path)
    return path, full


def test_loads_torchvision_file_from_path_and_input_norm(tmp_path):
    path, full = _torchvision_style_file(tmp_path, "vgg16", "my-vgg16.pth")
    vgg = VGGFeatures("vgg16", ["conv1_1"], vgg_weights=path)
    assert str(path) in vgg.feature_space
    x = torch.rand(1, 3, 8, 8)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = torch.nn.functional.conv2d((x - mean) / std, full.body[0].weight, full.body[0].bias, padding=1)
    assert torch.allclose(vgg(x)["conv1_1"], expected, atol=1e-5)
    ranged = VGGFeatures("vgg16", ["conv1_1"], vgg_weights=path, range_norm=True)
    assert torch.allclose(ranged(x * 2 - 1)["conv1_1"], expected, atol=1e-5)


def test_wrong_vgg_file_is_named(tmp_path):
    path, _ = _torchvision_style_file(tmp_path, "vgg19", "vgg19.pth")
    with pytest.raises(SpnirError, match="expected torchvision vgg16 .* found a vgg19 file"):
        VGGFeatures("vgg16", ["relu1_1"], vgg_weights=path)
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    with pytest.raises(SpnirError, match="junk.pth"):
        VGGFeatures("vgg16", ["relu1_1"], vgg_weights=tmp_path / "junk.pth")


def test_imagenet_weights_from_hub_cache_or_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SpnirError, match=r"spnir weights vgg16 --from FILE.*vgg_weights='random'"):
        VGGFeatures("vgg16", ["relu1_1"])
    path, full = _torchvision_style_file(tmp_path, "vgg16", "x.pth")
    cached = cached_vgg_path("vgg16")
    assert cached.name == "vgg16-397923af.pth" and cached.parent == tmp_path / "torch" / "hub" / "checkpoints"
    cached.parent.mkdir(parents=True)
    path.rename(cached)
    vgg = VGGFeatures("vgg16", ["relu1_1"])
    assert "ImageNet" in vgg.feature_space and torch.equal(vgg.body[0].weight, full.body[0].weight)


def test_weights_command_verifies_hash(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    bogus = tmp_path / "vgg16.pth"
    bogus.write_bytes(b"x" * 100)
    assert main(["weights", "vgg16", "--from", str(bogus)]) == 2
    assert "not the file of ImageNet VGG16, torchvision weights" in capsys.readouterr().err
    assert main(["weights", "vgg16", "--check"]) == 1
    # a file whose sha256 has the expected prefix is placed in the cache
    import spnir.weights.vgg as vw

    monkeypatch.setattr(vw, "expected_hash_prefix", lambda kind: vw.sha256_of(bogus)[:8])
    dest = install_vgg_weights("vgg16", bogus)
    assert dest == cached_vgg_path("vgg16") and dest.read_bytes() == bogus.read_bytes()
    assert main(["weights", "vgg16", "--check"]) == 0
