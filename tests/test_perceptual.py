"""LPIPS/DISTS: values equal the reference packages' (lpips 0.1.4, DISTS_pytorch 0.1) on the same weights,
the learned-weight files are placed only when hash-checked, and eval/validation report them (lower is better).

The literal values were computed by ``lpips.LPIPS(net="vgg", model_path=...)(x, y, normalize=True)`` and
``DISTS_pytorch.DISTS`` (alpha/beta set from the file) in a separate venv (torch 2.14.1 + torchvision
0.29.1), with torchvision's VGG16 loaded with spnir's seeded random VGG16 (seed 0), on
``seeded_image_pair()`` and the synthetic learned weights of tests/perceptual_support.py.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from perceptual_support import seeded_image_pair, synthetic_dists_state, synthetic_lpips_state
from PIL import Image

from spnir.cli import main
from spnir.errors import SpnirError
from spnir.metrics import MetricSettings
from spnir.metrics.perceptual import DISTS, LPIPS
from spnir.metrics.suite import MetricSuite
from spnir.train.validation import BestScores
from spnir.weights import perceptual as perceptual_weights

REFERENCE = {  # reference packages, on the inputs and weights named in the module doc
    "lpips": [0.027799393981695175, 0.026507774367928505],
    "dists": [0.015310287475585938, 0.014647245407104492],
}


@pytest.fixture()
def learned_files(tmp_path: Path) -> dict[str, Path]:
    files = {"lpips": tmp_path / "lpips_syn.pth", "dists": tmp_path / "dists_syn.pt"}
    torch.save(synthetic_lpips_state(0), files["lpips"])
    torch.save(synthetic_dists_state(0), files["dists"])
    return files


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learned_files: dict[str, Path]) -> Path:
    """A torch hub cache holding the synthetic learned weights under the release names."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    for kind, key in (("lpips-vgg", "lpips"), ("dists", "dists")):
        dest = perceptual_weights.cached_learned_path(kind)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(learned_files[key].read_bytes())
    return dest.parent


@pytest.mark.parametrize("name, cls", [("lpips", LPIPS), ("dists", DISTS)])
def test_values_equal_the_reference_packages(name: str, cls, learned_files: dict[str, Path]) -> None:
    metric = cls("random", learned_files[name])
    x, y = seeded_image_pair()
    values = metric(x, y)
    assert values.shape == (2,)
    assert values.tolist() == pytest.approx(REFERENCE[name], abs=1e-5)
    assert metric(x, x).abs().max() < 1e-5  # identical images: distance 0
    one = metric(x[1:], y[1:])  # batched = one at a time
    assert float(one[0]) == pytest.approx(float(values[1]), abs=1e-6)
    assert any("seeded random" in line for line in metric.sources)
    assert any("NOT the released file" in line for line in metric.sources)


def test_a_missing_learned_file_says_how_to_place_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(SpnirError, match=r"spnir weights lpips-vgg.*--from"):
        LPIPS("random")
    with pytest.raises(SpnirError, match="spnir weights dists"):
        DISTS("random")


def test_a_wrong_shaped_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.pt"
    torch.save({"alpha": torch.ones(1, 3, 1, 1), "beta": torch.ones(1, 3, 1, 1)}, path)
    with pytest.raises(SpnirError, match=r"alpha is \(1, 3, 1, 1\), expected \(1, 1475, 1, 1\)"):
        DISTS("random", path)


def test_weights_come_out_of_a_wheel_a_folder_or_the_file_only_when_the_hash_matches(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, learned_files: dict[str, Path]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    data = learned_files["lpips"].read_bytes()
    spec = dataclasses.replace(perceptual_weights.LEARNED_FILES["lpips-vgg"], sha256=hashlib.sha256(data).hexdigest())
    monkeypatch.setitem(perceptual_weights.LEARNED_FILES, "lpips-vgg", spec)
    wheel = tmp_path / "dl" / "lpips-0.1.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr("lpips/weights/v0.0/vgg.pth", b"older weights")
        archive.writestr("lpips/weights/v0.1/vgg.pth", data)
    for source in (wheel, wheel.parent, learned_files["lpips"]):
        dest, origin = perceptual_weights.install_learned_weights("lpips-vgg", source)
        assert dest.read_bytes() == data and origin == str(source)
    assert main(["weights", "lpips-vgg", "--check"]) == 0
    with pytest.raises(SpnirError, match="holds no file with the sha256"):
        perceptual_weights.install_learned_weights("lpips-vgg", learned_files["dists"])


def _hr_folder(folder: Path) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def test_eval_reports_lpips_and_dists_lower_is_better(cache: Path, tmp_path: Path, capsys) -> None:
    hr = _hr_folder(tmp_path / "Tiny")
    out = tmp_path / "r.json"
    code = main(["eval", "--scale", "2", "--data", str(hr), "--metrics", "psnr,ssim,lpips,dists",
                 "--vgg-weights", "random", "--json", str(out), "--device", "cpu"])
    text = capsys.readouterr().out
    assert code == 0
    assert "PSNR/SSIM/LPIPS\u2193/DISTS\u2193" in text and "LPIPS, DISTS: lower is better" in text
    assert "lpips_vgg_v0.1-a78928a0.pth (sha256" in text and "seeded random" in text
    result = json.loads(out.read_text())["Tiny"]
    assert result["better"] == {"psnr": "higher", "ssim": "higher", "lpips": "lower", "dists": "lower"}
    assert set(result["per_image"]["img0.png"]) == {"psnr", "ssim", "lpips", "dists"}
    assert 0 < result["lpips"] < 1 and 0 < result["dists"] < 1


def test_suite_uses_the_psnr_crop_and_8_bit_rounding(cache: Path) -> None:
    x, y = seeded_image_pair()
    suite = MetricSuite.build(["lpips"], MetricSettings(crop_border=4, y_channel=True), "random")
    got = suite.measure(x, y)["lpips"]
    crop = (slice(None), slice(None), slice(4, -4), slice(4, -4))
    want = suite.perceptual["lpips"]((x[crop] * 255).round() / 255, (y[crop] * 255).round() / 255)
    assert torch.allclose(got, want.double(), atol=1e-7)
    assert got.dtype == torch.float64 and got.shape == (2,)


def test_best_validation_score_of_lpips_is_the_lowest() -> None:
    best = BestScores()
    best.update(1, {"val": {"psnr": 30.0, "lpips": 0.3}})
    best.update(2, {"val": {"psnr": 29.0, "lpips": 0.2}})
    assert best.best["val"] == {"psnr": (30.0, 1), "lpips": (0.2, 2)}


def test_val_metrics_accepts_lpips_and_refuses_unknown_names() -> None:
    from spnir.metrics.suite import check_metric_names

    assert check_metric_names(["psnr", "lpips", "dists"]) == ["psnr", "lpips", "dists"]
    with pytest.raises(SpnirError, match="niqe"):
        check_metric_names(["psnr", "niqe"], "val.metrics")


def test_validator_measures_lpips_through_the_suite(cache: Path) -> None:
    from spnir.train.validation import ValidationSet, Validator

    x, y = seeded_image_pair()
    data = [{"lq": y[i], "gt": x[i]} for i in range(2)]
    settings = MetricSettings(crop_border=0, y_channel=False)
    suite = MetricSuite.build(["psnr", "lpips"], settings, "random")
    validator = Validator([ValidationSet("v", data)], ["psnr", "lpips"], settings, torch.device("cpu"), suite=suite)
    results = validator.run(torch.nn.Identity(), 10)
    want = suite.measure(y, x)
    assert results["v"]["lpips"] == pytest.approx(float(want["lpips"].mean()), abs=1e-6)
    assert "lpips" in validator.summary(results)
