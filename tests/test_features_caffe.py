"""The Caffe-convention ImageNet VGG16 as a feature space: exact features, the SPN term in it, selection and refusals.

Tests that read the real file skip without ``../shared`` (a user's fresh clone); the rest build small files here.
"""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file

from spnir import SPN
from spnir.cli import main
from spnir.errors import SpnirError
from spnir.features import VGGFeatures
from spnir.weights.vgg import cached_vgg_path, install_vgg_weights, resolve_feature_space

SHARED = Path(__file__).resolve().parents[1] / "../shared"
CAFFE_FILE = SHARED / "data/pretrained/vgg16_caffe/vgg16_caffe_features.safetensors"
needs_caffe_file = pytest.mark.skipif(not CAFFE_FILE.is_file(),
                                      reason=f"the Caffe VGG16 file is not here ({CAFFE_FILE}): ../shared is absent")
CAFFE_METADATA = {"input": "caffe: RGB in [0,1] -> x255 -> BGR -> minus mean (103.939, 116.779, 123.68) BGR"}
# torchvision's vgg16.features indices of the 13 convolutions, and where the 2x2 max pools sit.
CONVS = (0, 2, 5, 7, 10, 12, 14, 17, 19, 21, 24, 26, 28)
POOL_AFTER = (2, 7, 14, 21, 28)


def reference_features(state: dict[str, torch.Tensor], x: torch.Tensor,
                       wanted: dict[str, int]) -> dict[str, torch.Tensor]:
    """An independent VGG16 forward: Caffe's transform, then conv/ReLU/pool with torch.nn.functional."""
    h = x * 255.0
    h = h[:, [2, 1, 0]] - torch.tensor([103.939, 116.779, 123.68]).view(1, 3, 1, 1)
    out, last = {}, max(wanted.values())
    for index in CONVS:
        h = F.relu(F.conv2d(h, state[f"features.{index}.weight"], state[f"features.{index}.bias"], padding=1))
        for name, relu_index in wanted.items():
            if relu_index == index + 1:
                out[name] = h
        if index + 1 >= last:
            break
        if index in POOL_AFTER:
            h = F.max_pool2d(h, 2, 2)
    return out


def small_caffe_file(tmp_path: Path, metadata: dict[str, str] | None = CAFFE_METADATA) -> Path:
    """The first two VGG16 convolutions with random weights, saved with (or without) Caffe metadata."""
    generator = torch.Generator().manual_seed(0)
    state = {
        "features.0.weight": torch.randn(64, 3, 3, 3, generator=generator) * 0.01,
        "features.0.bias": torch.randn(64, generator=generator),
        "features.2.weight": torch.randn(64, 64, 3, 3, generator=generator) * 0.01,
        "features.2.bias": torch.randn(64, generator=generator),
    }
    # the loader wants every vgg16 key; the layers past relu1_2 are never computed
    shapes = {5: (128, 64), 7: (128, 128), 10: (256, 128), 12: (256, 256), 14: (256, 256), 17: (512, 256),
              19: (512, 512), 21: (512, 512), 24: (512, 512), 26: (512, 512), 28: (512, 512)}
    for index, (cout, cin) in shapes.items():
        state[f"features.{index}.weight"] = torch.zeros(cout, cin, 3, 3)
        state[f"features.{index}.bias"] = torch.zeros(cout)
    path = tmp_path / "caffe_small.safetensors"
    save_file(state, str(path), metadata=metadata)
    return path


def test_caffe_transform_is_applied_to_the_input_not_folded_into_the_weights(tmp_path):
    path = small_caffe_file(tmp_path)
    vgg = VGGFeatures("vgg16", ["relu1_2"], vgg_weights=path)
    assert vgg.convention == "caffe" and "Caffe input convention" in vgg.feature_space
    x = torch.rand(2, 3, 13, 17)  # odd sizes: borders see the zero padding of the transformed input
    expected = reference_features(load_file(str(path)), x, {"relu1_2": 3})["relu1_2"]
    torch.testing.assert_close(vgg(x)["relu1_2"], expected, rtol=1e-5, atol=1e-4)
    # the same weights read as torchvision's convention compute something else
    torchvision_view = VGGFeatures("vgg16", ["relu1_2"], vgg_weights=small_caffe_file(tmp_path, metadata=None))
    assert torchvision_view.convention == "torchvision"
    assert not torch.allclose(torchvision_view(x)["relu1_2"], expected, atol=1e-2)


def test_stated_convention_that_contradicts_the_file_is_refused(tmp_path):
    path = small_caffe_file(tmp_path)
    with pytest.raises(SpnirError, match="trained with caffe's input convention.*torchvision: was asked for"):
        VGGFeatures("vgg16", ["relu1_1"], vgg_weights=f"torchvision:{path}")
    plain = small_caffe_file(tmp_path, metadata=None)
    assert VGGFeatures("vgg16", ["relu1_1"], vgg_weights=f"caffe:{plain}").convention == "caffe"
    torchvision_named = tmp_path / "vgg16-397923af.pth"
    torchvision_named.write_bytes(b"")
    with pytest.raises(SpnirError, match="trained with torchvision's input convention"):
        resolve_feature_space("vgg16", f"caffe:{torchvision_named}")


def test_imagenet_caffe_needs_the_placed_file_and_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SpnirError, match=r"ImageNet VGG16, Caffe weights.*spnir weights vgg16-caffe --from FILE"):
        resolve_feature_space("vgg16", "imagenet-caffe")
    with pytest.raises(SpnirError, match="no Caffe-convention vgg19"):
        resolve_feature_space("vgg19", "imagenet-caffe")


def test_weights_command_refuses_the_caffe_file_as_torchvision_and_names_it(tmp_path, monkeypatch, capsys):
    import spnir.weights.vgg as vw

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    fake = tmp_path / "fake.safetensors"
    fake.write_bytes(b"not vgg")
    caffe = vw.KNOWN_FILES["vgg16-caffe"]
    monkeypatch.setitem(vw.KNOWN_FILES, "vgg16-caffe", vw.KnownFile(**{**caffe.__dict__, "sha256": vw.sha256_of(fake)}))
    assert main(["weights", "vgg16", "--from", str(fake)]) == 2
    assert "it is ImageNet VGG16, Caffe weights" in capsys.readouterr().err
    assert main(["weights", "vgg16-caffe", "--from", str(fake)]) == 0
    assert cached_vgg_path("vgg16-caffe").read_bytes() == b"not vgg"
    assert "ImageNet VGG16, Caffe weights" in capsys.readouterr().out


@needs_caffe_file
def test_real_caffe_vgg16_features_equal_an_independent_computation(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    dest = install_vgg_weights("vgg16-caffe", CAFFE_FILE)  # verified by the shared README's sha256
    assert dest == cached_vgg_path("vgg16-caffe")
    wanted = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15}
    vgg = VGGFeatures("vgg16", list(wanted), vgg_weights="imagenet-caffe")
    assert vgg.feature_space.startswith("ImageNet VGG16, Caffe weights")
    x = torch.rand(1, 3, 37, 29, generator=torch.Generator().manual_seed(1))
    expected = reference_features(load_file(str(CAFFE_FILE)), x, wanted)
    got = vgg(x)
    for name in wanted:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-3 * expected[name].abs().max().item())
    # the path with its metadata is the same space
    by_path = VGGFeatures("vgg16", ["relu1_2"], vgg_weights=CAFFE_FILE)
    assert by_path.convention == "caffe"
    torch.testing.assert_close(by_path(x)["relu1_2"], got["relu1_2"])


@needs_caffe_file
def test_spn_term_in_the_caffe_space_is_the_signed_weighted_distance(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    install_vgg_weights("vgg16-caffe", CAFFE_FILE)
    torch.manual_seed(0)
    model = torch.nn.Conv2d(3, 3, 3, padding=1)
    layer_weights = {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}
    spn = SPN(model, weight=0.001, layer_weights=layer_weights, vgg_weights="imagenet-caffe",
              periods=(1,), decays=(0.1,), init_decay=0.1)
    assert "Caffe weights" in spn.feature_space
    lq = torch.rand(2, 3, 24, 24)
    with torch.no_grad():
        model.weight.add_(0.05)  # the negative lags the model
        out = model(lq)
        neg = spn.source.negatives(lq, out)[0] if hasattr(spn, "source") else spn.negatives.negatives(lq, out)[0]
        term = spn(lq, out)
    state = load_file(str(CAFFE_FILE))
    wanted = {"relu1_2": 3, "relu2_2": 8, "relu3_3": 15}
    f_out, f_neg = reference_features(state, out, wanted), reference_features(state, neg, wanted)
    expected = -0.001 * sum(w * (f_out[k] - f_neg[k]).abs().mean() for k, w in layer_weights.items())
    torch.testing.assert_close(term, expected, rtol=1e-4, atol=0)
    assert term < 0


@needs_caffe_file
def test_lpips_refuses_the_caffe_backbone(tmp_path):
    from spnir.metrics.perceptual import LPIPS

    with pytest.raises(SpnirError, match="LPIPS cannot use .*Caffe.*fit on torchvision's ImageNet VGG16"):
        LPIPS(vgg_weights=CAFFE_FILE, learned=tmp_path / "unused.pth")
