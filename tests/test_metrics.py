"""PSNR/SSIM: BasicSR's values, both Y conventions, torch and numpy inputs, batches."""
from __future__ import annotations

import math

import numpy as np
import pytest
import reference_numpy as ref
import torch

from spnir.errors import SpnirError
from spnir.metrics import MetricSettings, psnr, rgb_to_y, ssim


def _images() -> tuple[np.ndarray, np.ndarray]:
    """Fixed 48x40 RGB uint8 pair: random GT and GT + uniform noise in [-20, 20], clipped."""
    rng = np.random.RandomState(0)
    gt = rng.randint(0, 256, (48, 40, 3)).astype(np.uint8)
    out = np.clip(gt.astype(int) + rng.randint(-20, 21, gt.shape), 0, 255).astype(np.uint8)
    return out, gt


def _tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


# BasicSR's calculate_psnr / calculate_ssim(img, img2, crop_border, test_y_channel) on _images()
# (channels flipped to BGR, as BasicSR reads images with cv2): (crop, y) -> (psnr, ssim)
BASICSR_VALUES = {
    (0, False): (26.907341910349185, 0.9873826654822375),
    (0, True): (31.69980669686624, 0.9876293434094747),
    (4, False): (26.917633638246222, 0.9877022676374949),
    (4, True): (31.72822663661597, 0.9883072262715645),
}


@pytest.mark.parametrize("crop, y", list(BASICSR_VALUES))
def test_basicsr_convention_matches_basicsr(crop: int, y: bool) -> None:
    out, gt = _images()
    want_psnr, want_ssim = BASICSR_VALUES[(crop, y)]
    assert psnr(out, gt, crop_border=crop, y_channel=y) == pytest.approx(want_psnr, abs=1e-3)
    assert ssim(out, gt, crop_border=crop, y_channel=y) == pytest.approx(want_ssim, abs=1e-4)
    # torch input in [0, 1] gives the same numbers, batched
    batch_out, batch_gt = _tensor(out).repeat(2, 1, 1, 1), _tensor(gt).repeat(2, 1, 1, 1)
    p = psnr(batch_out, batch_gt, crop_border=crop, y_channel=y)
    s = ssim(batch_out, batch_gt, crop_border=crop, y_channel=y)
    assert p.shape == (2,) and p.dtype == torch.float64
    torch.testing.assert_close(p, torch.full((2,), want_psnr, dtype=torch.float64), atol=1e-3, rtol=0)
    torch.testing.assert_close(s, torch.full((2,), want_ssim, dtype=torch.float64), atol=1e-4, rtol=0)


@pytest.mark.parametrize("convention, rounded", [("basicsr", False), ("matlab", True)])
@pytest.mark.parametrize("crop, y", [(0, False), (3, True)])
def test_matches_straightforward_numpy(convention: str, rounded: bool, crop: int, y: bool) -> None:
    out, gt = _images()
    kwargs = dict(crop_border=crop, y_channel=y, convention=convention)
    assert psnr(out, gt, **kwargs) == pytest.approx(ref.psnr(out, gt, crop, y, rounded), abs=1e-9)
    assert ssim(out, gt, **kwargs) == pytest.approx(ref.ssim(out, gt, crop, y, rounded), abs=1e-9)


def test_conventions_differ_only_by_y_rounding() -> None:
    out, gt = _images()
    basicsr = psnr(out, gt, 4, True, "basicsr")
    matlab = psnr(out, gt, 4, True, "matlab")
    assert basicsr != matlab and abs(basicsr - matlab) < 0.5
    assert psnr(out, gt, 4, False, "basicsr") == psnr(out, gt, 4, False, "matlab")


def test_rgb_to_y_matlab_values() -> None:
    pixels = torch.tensor([[0, 0, 0], [255, 255, 255], [255, 0, 0], [10, 200, 30]], dtype=torch.float64)
    pixels = pixels.T.reshape(1, 3, 1, 4)
    y = rgb_to_y(pixels, "matlab").flatten().tolist()
    # 16 + (65.481 R + 128.553 G + 24.966 B) / 255 = 16, 235, 81.481, 122.331 -> rounded to 8 bit
    assert y == [16.0, 235.0, 81.0, 122.0]
    exact = rgb_to_y(pixels, "basicsr").flatten()
    assert exact[3] == pytest.approx(16 + (65.481 * 10 + 128.553 * 200 + 24.966 * 30) / 255)


def test_float_input_is_rounded_to_8_bit_unless_told() -> None:
    gt = torch.full((1, 3, 16, 16), 0.5)
    out = gt + 0.001  # less than half an 8-bit level: same saved image
    assert math.isinf(float(psnr(out, gt)))
    assert float(psnr(out, gt, quantize=False)) == pytest.approx(10 * math.log10(1 / 0.001**2), abs=1e-3)


def test_identical_images() -> None:
    _, gt = _images()
    assert math.isinf(psnr(gt, gt))
    assert ssim(gt, gt) == pytest.approx(1.0)


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda a: psnr(a, a[:-1]), "differ in shape"),
        (lambda a: ssim(a[:12, :12], a[:12, :12], crop_border=1), "at least 11x11"),
        (lambda a: psnr(a, a, convention="octave"), "unknown metric convention"),
        (lambda a: psnr(a.astype(np.float32), a), "must be uint8"),
        (lambda a: psnr(a, a, crop_border=30), "too small to crop"),
        (lambda a: psnr(torch.zeros(3, 4, 4, dtype=torch.uint8), a), "float in"),
    ],
)
def test_bad_input_is_explained(call, message: str) -> None:
    with pytest.raises(SpnirError, match=message):
        call(_images()[1])


def test_settings_measure_each_image_of_a_batch() -> None:
    out, gt = _images()
    settings = MetricSettings(crop_border=4, y_channel=True, convention="basicsr")
    batch_out = torch.cat([_tensor(out), _tensor(gt) * 0 + 0.5])
    psnr_values, ssim_values = settings.measure(batch_out, _tensor(gt).repeat(2, 1, 1, 1))
    assert psnr_values.shape == ssim_values.shape == (2,)
    assert float(psnr_values[0]) == pytest.approx(BASICSR_VALUES[(4, True)][0], abs=1e-3)
    assert float(psnr_values[1]) == pytest.approx(psnr(batch_out[1:], _tensor(gt), crop_border=4, y_channel=True)[0])
    assert settings.describe() == "Y channel, border 4 px, convention basicsr"


def test_ssim_over_several_strips_matches_numpy() -> None:
    # on CPU the SSIM map is computed in strips of 32 rows: 100 px (90 map rows) spans three
    rng = np.random.RandomState(1)
    gt = rng.randint(0, 256, (100, 37, 3)).astype(np.uint8)
    out = np.clip(gt.astype(int) + rng.randint(-30, 31, gt.shape), 0, 255).astype(np.uint8)
    for y in (False, True):
        assert ssim(out, gt, crop_border=0, y_channel=y) == pytest.approx(ref.ssim(out, gt, 0, y, False), abs=1e-9)


def test_measure_equals_psnr_and_ssim_called_separately() -> None:
    out, gt = _images()
    settings = MetricSettings(crop_border=2, y_channel=True, convention="matlab")
    batch_out, batch_gt = _tensor(out).repeat(2, 1, 1, 1), _tensor(gt).repeat(2, 1, 1, 1)
    p, s = settings.measure(batch_out, batch_gt)
    torch.testing.assert_close(p, psnr(batch_out, batch_gt, 2, True, "matlab"), atol=0, rtol=0)
    torch.testing.assert_close(s, ssim(batch_out, batch_gt, 2, True, "matlab"), atol=0, rtol=0)
