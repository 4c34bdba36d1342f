"""Degradations: documented properties, reproducibility with a seed, pipelines from configs."""
from __future__ import annotations

import math

import pytest
import torch

from spnir.data import degrade as D
from spnir.errors import SpnirError
from spnir.imresize import imresize


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def img(h: int = 32, w: int = 40, seed: int = 1) -> torch.Tensor:
    return torch.rand((3, h, w), generator=gen(seed))


def test_bicubic_is_matlab_imresize_rounded_to_8_bit():
    x = img(24, 36)
    lr = D.bicubic(x, 4)
    assert lr.shape == (3, 6, 9)
    assert torch.equal(lr, imresize(x, 0.25).clamp(0, 1).mul(255).round().div(255))
    assert torch.allclose(D.bicubic(x, 4, quantize_output=False), imresize(x, 0.25))
    with pytest.raises(SpnirError, match="not a multiple of scale 4"):
        D.bicubic(img(26, 36), 4)
    assert D.mod_crop(img(26, 37), 4).shape == (3, 24, 36)


def test_haze_scattering_model():
    x = img()
    assert torch.equal(D.haze(x, beta=0.0, airlight=0.9), x)  # t = 1 returns J
    depth = torch.full((1, 32, 40), 0.5)
    t = math.exp(-1.2 * 0.5)
    assert torch.allclose(D.haze(x, 1.2, 0.8, depth), x * t + 0.8 * (1 - t))
    per_channel = D.haze(torch.zeros(3, 4, 4), 50.0, [0.7, 0.8, 0.9], torch.ones(4, 4))
    assert torch.allclose(per_channel[:, 0, 0], torch.tensor([0.7, 0.8, 0.9]))
    # Proxy depth: farther (hazier) at the top of the frame.
    hazy = D.haze(torch.zeros(3, 16, 16), 1.0, 1.0)
    assert hazy[:, 0].mean() > hazy[:, -1].mean() and float(hazy[:, -1].max()) == 0.0
    with pytest.raises(SpnirError, match="depth map is 3x3"):
        D.haze(x, 1.0, 0.9, torch.ones(3, 3))


def test_reside_ranges():
    assert D.HAZE_ITS == {"beta": (0.6, 1.8), "airlight": (0.7, 1.0), "depth_scale": 1.0}
    assert D.HAZE_OTS == {"beta": (0.04, 0.2), "airlight": (0.8, 1.0), "depth_scale": 12.5}


def _proxy_transmission(preset: dict, images: int = 200) -> tuple[list[float], list[float]]:
    """Per image: mean transmission on the depth proxy, and that of the farthest (top) row (A = 1, J = 0)."""
    deg = D.build_degradation([{**preset, "type": "haze", "airlight": 1.0}])
    means, far = [], []
    for i in range(images):
        t = 1 - deg(torch.zeros(3, 64, 8), generator=torch.Generator().manual_seed(i))
        means.append(float(t.mean()))
        far.append(float(t[:, 0].mean()))
    return means, far


def test_ots_preset_makes_visible_haze_on_relative_depth():
    # docs/data.md: on the proxy, OTS gives a mean transmission of about 0.54 (0.37..0.79 per image), ITS 0.59;
    # before depth_scale OTS stayed at t >= 0.82 even on the farthest row.
    means, far = _proxy_transmission(D.HAZE_OTS)
    assert 0.45 < sum(means) / len(means) < 0.65
    assert min(means) < 0.45 and max(means) > 0.7 and min(far) < 0.1
    its_means, _ = _proxy_transmission(D.HAZE_ITS)
    assert abs(sum(its_means) / len(its_means) - sum(means) / len(means)) < 0.1


def test_haze_step_scales_the_given_depth_not_the_formula():
    x = img(16, 16)
    depth = torch.rand(1, 16, 16)
    step = D.build_degradation([{"type": "haze", "beta": 0.1, "airlight": 0.9, "depth_scale": 12.5}])
    assert torch.allclose(step(x, depth=depth), D.haze(x, 0.1, 0.9, depth * 12.5))
    with pytest.raises(SpnirError, match="depth_scale must be > 0"):
        D.build_degradation([{"type": "haze", "depth_scale": 0}])(x)


def test_noise_std_matches_sigma_and_is_seeded():
    x = torch.full((3, 128, 128), 0.5)
    n = D.noise(x, 25, gen(3)) - x
    assert abs(float(n.std()) * 255 - 25) < 0.5 and abs(float(n.mean())) < 0.005
    assert torch.equal(D.noise(x, 25, gen(3)), D.noise(x, 25, gen(3)))
    assert not torch.equal(D.noise(x, 25, gen(3)), D.noise(x, 25, gen(4)))
    clipped = D.noise(torch.zeros(3, 8, 8), 50, gen(), clip=True)
    assert float(clipped.min()) == 0.0
    with pytest.raises(SpnirError, match="sigma must be >= 0"):
        D.noise(x, -1)


@pytest.mark.parametrize("kernel", [D.gaussian_kernel(1.5), D.gaussian_kernel(0.3, 5), D.motion_kernel(9, 30),
                                    D.motion_kernel(4, 0), D.motion_kernel(12.5, 100)])
def test_blur_kernels_sum_to_one_and_keep_constants(kernel):
    assert kernel.shape[0] % 2 == 1 and kernel.shape[0] == kernel.shape[1]
    assert abs(float(kernel.sum()) - 1) < 1e-6 and float(kernel.min()) >= 0
    flat = torch.full((3, 20, 24), 0.3)
    assert torch.allclose(D.blur(flat, kernel), flat, atol=1e-6)


def test_motion_kernel_direction_and_blur_effect():
    vertical = D.motion_kernel(5, 0)
    # the whole line sits in the centre column
    assert float(vertical[:, vertical.shape[1] // 2].sum()) == pytest.approx(1.0)
    x = img()
    blurred = D.blur(x, D.gaussian_kernel(2.0))
    assert blurred.shape == x.shape and blurred.std() < x.std()
    assert torch.equal(D.blur(x, torch.ones(1, 1)), x)
    with pytest.raises(SpnirError, match="odd size"):
        D.blur(x, torch.ones(2, 2) / 4)


def test_jpeg_changes_image_keeps_shape():
    x = img(33, 47)
    y = D.jpeg(x, 20)
    assert y.shape == x.shape and not torch.equal(y, x)
    assert (D.jpeg(x, 95) - x).abs().mean() < (y - x).abs().mean()
    with pytest.raises(SpnirError, match="quality must be in 1..100"):
        D.jpeg(x, 0)


def test_rain_adds_bright_streaks_reproducibly():
    x = img() * 0.5
    wet = D.rain(x, density=0.02, angle=10, length=9, intensity=0.8, generator=gen(5))
    assert torch.equal(wet, D.rain(x, 0.02, 10, 9, 0.8, generator=gen(5)))
    assert bool((wet >= x - 1e-7).all()) and float(wet.max()) <= 1.0 and float((wet - x).mean()) > 0.01
    assert torch.equal(D.rain(x, density=0.0, generator=gen()), x)
    with pytest.raises(SpnirError, match="density and intensity"):
        D.rain(x, density=2.0)


def test_pipeline_ranges_sampled_per_image_and_reproducible():
    deg = D.build_degradation([
        {"type": "blur", "kernel": "gaussian", "sigma": [0.5, 2.0]},
        {"type": "noise", "sigma": [0, 25]},
        {"type": "jpeg", "quality": [30, 95], "p": 0.5},
    ])
    x = img()
    assert torch.equal(deg(x, gen(7)), deg(x, gen(7)))
    assert not torch.equal(deg(x, gen(7)), deg(x, gen(8)))
    draws = [deg.sample(gen(s)) for s in range(40)]
    sigmas = [d[0]["sigma"] for d in draws]
    assert all(0.5 <= s <= 2.0 for s in sigmas) and len(set(sigmas)) == 40
    qualities = [d[2]["quality"] for d in draws if d[2] is not None]
    assert all(isinstance(q, int) and 30 <= q <= 95 for q in qualities) and 5 < len(qualities) < 35


def test_build_degradation_forms_and_presets():
    assert D.build_degradation("sr").scale == 4 and D.build_degradation("sr", scale=2).scale == 2
    assert D.build_degradation({"type": "noise", "sigma": 15}).scale == 1
    assert len(D.build_degradation({"steps": [{"type": "quantize"}, {"type": "jpeg"}]}).steps) == 2
    for name in D.PRESETS:
        out = D.build_degradation(name)(img(32, 32), gen())
        assert out.shape[0] == 3
    chosen = {D.build_degradation({"type": "blur", "kernel": ["gaussian", "motion"]}).sample(gen(s))[0]["kernel"]
              for s in range(20)}
    assert chosen == {"gaussian", "motion"}


@pytest.mark.parametrize("config, message", [
    ([{"type": "snow"}], "unknown type 'snow'"),
    ([{"type": "noise", "sigma": 5, "sigmaa": 3}], r"\[0\] \(noise\): unknown key\(s\) sigmaa"),
    ([{"type": "noise", "sigma": [30, 5]}], "lo > hi"),
    ([{"type": "noise", "sigma": [1, 2, 3]}], r"expected a number, \[lo, hi\]"),
    ([{"sigma": 3}], "'type' key"),
    ([], "non-empty list"),
    ("superres", "unknown preset 'superres'"),
    ([{"type": "jpeg", "p": 1.5}], "p must be in"),
])
def test_bad_configs_fail_at_build(config, message):
    with pytest.raises(SpnirError, match=message):
        D.build_degradation(config)
