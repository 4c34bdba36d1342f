"""MATLAB bicubic imresize: BasicSR reference values, a straightforward numpy version, sizes, batching."""
from __future__ import annotations

import numpy as np
import pytest
import reference_numpy as ref
import torch

from spnir.errors import SpnirError
from spnir.imresize import imresize, output_length

SCALES = (1 / 2, 1 / 3, 1 / 4, 2, 3, 4)


def _pattern(h: int = 12, w: int = 10) -> torch.Tensor:
    """A fixed non-smooth test image in [0, 1): pixel k = (37 k mod 101) / 100, row-major."""
    return torch.from_numpy(((np.arange(h * w).reshape(h, w) * 37) % 101 / 100).astype(np.float32))[None]


# Computed with BasicSR's basicsr/utils/matlab_functions.py imresize on _pattern() (float32):
# output shape, first output row (first four values) and the sum of the whole output.
BASICSR_VALUES = {
    1 / 2: ((6, 5), [0.2860879898071289, 0.43726301193237305, 0.491908997297287, 0.5294790267944336], 14.8075),
    1 / 3: ((4, 4), [0.380636990070343, 0.4648909866809845, 0.5715230107307434, 0.6233749985694885], 8.19214),
    1 / 4: ((3, 3), [0.410614013671875, 0.5158770084381104, 0.6169899702072144], 4.60662),
    2: ((24, 20), [-0.1063769981265068, 0.022904999554157257, 0.28147000074386597, 0.5269240140914917], 236.92),
    3: ((36, 30), [-0.12802499532699585, -0.0744440034031868, 0.054733000695705414, 0.2374899983406067], 533.07001),
    4: ((48, 40), [-0.13574500381946564, -0.10522300004959106, -0.04002999886870384, 0.07405199855566025], 947.68),
}


@pytest.mark.parametrize("scale", SCALES)
def test_matches_basicsr_reference_values(scale: float) -> None:
    shape, first_row, total = BASICSR_VALUES[scale]
    out = imresize(_pattern(), scale)[0]
    assert tuple(out.shape) == shape
    np.testing.assert_allclose(out[0, : len(first_row)].numpy(), first_row, atol=1e-5, rtol=0)
    assert float(out.double().sum()) == pytest.approx(total, abs=1e-3)


@pytest.mark.parametrize("scale", SCALES)
@pytest.mark.parametrize("size", [(17, 13), (24, 31), (9, 7)])
def test_matches_straightforward_numpy(scale: float, size: tuple[int, int]) -> None:
    img = torch.rand(3, *size)
    expected = ref.imresize(img.permute(1, 2, 0).double().numpy(), scale).transpose(2, 0, 1)
    out = imresize(img, scale)
    assert out.dtype == torch.float32
    assert np.abs(out.numpy() - expected).max() < 1e-5
    # float64 input is computed in float64: agreement to rounding error only
    assert np.abs(imresize(img.double(), scale).numpy() - expected).max() < 1e-12


def test_kernel_wider_than_image_mirrors_like_matlab() -> None:
    # a 1/4 downscale of 5 px uses 18 taps: indices wrap around the mirrored image more than once
    img = torch.rand(2, 5, 6)
    expected = ref.imresize(img.permute(1, 2, 0).double().numpy(), 1 / 4).transpose(2, 0, 1)
    np.testing.assert_allclose(imresize(img.double(), 1 / 4).numpy(), expected, atol=1e-12)


def test_batched_equals_one_by_one() -> None:
    batch = torch.rand(3, 3, 15, 11)
    out = imresize(batch, 1 / 3)
    assert out.shape == (3, 3, 5, 4)
    for i in range(3):
        torch.testing.assert_close(out[i], imresize(batch[i], 1 / 3), atol=1e-7, rtol=0)


def test_constant_image_stays_constant_and_antialiasing_smooths() -> None:
    flat = torch.full((1, 16, 16), 0.3)
    torch.testing.assert_close(imresize(flat, 1 / 4), torch.full((1, 4, 4), 0.3))
    stripes = (torch.arange(18) % 2).float().expand(1, 18, 18)  # finest vertical stripes
    # without antialiasing 1/3 samples every third pixel (0, 1, 0, ...); with it they average out
    assert imresize(stripes, 1 / 3, antialiasing=False)[..., 1:-1].std() > 0.4
    assert imresize(stripes, 1 / 3)[..., 1:-1].std() < 0.1


def test_output_length_is_matlab_ceil() -> None:
    assert output_length(7, 1 / 2) == 4
    assert output_length(9, 1 / 3) == 3
    assert all(output_length(k * 3, 1 / 3) == k for k in range(1, 2000))


@pytest.mark.parametrize(
    "bad, message",
    [(torch.zeros(4, 4, dtype=torch.uint8)[None], "float"), (torch.zeros(4, 4), "(C, H, W)")],
)
def test_rejects_bad_input(bad: torch.Tensor, message: str) -> None:
    with pytest.raises(SpnirError, match=message.replace("(", r"\(").replace(")", r"\)")):
        imresize(bad, 2)


def test_rejects_bad_scale() -> None:
    with pytest.raises(SpnirError, match="positive"):
        imresize(torch.zeros(1, 4, 4), 0)


@pytest.mark.parametrize("scale", SCALES)
def test_images_spanning_several_bands_match_numpy(scale: float) -> None:
    # on CPU each axis is resized in bands of 16 or 32 output pixels: 70x45 px spans several at every scale
    img = torch.rand(2, 70, 45, dtype=torch.float64)
    expected = ref.imresize(img.permute(1, 2, 0).numpy(), scale).transpose(2, 0, 1)
    assert np.abs(imresize(img, scale).numpy() - expected).max() < 1e-12
    assert np.abs(imresize(img.float(), scale).numpy() - expected).max() < 1e-5


@pytest.mark.parametrize("in_length, scale", [(70, 1 / 4), (45, 1 / 3), (33, 2), (5, 1 / 4)])
def test_band_plan_and_dense_plan_hold_the_same_matrix(in_length: int, scale: float) -> None:
    # CPU uses narrow bands; other devices use one band (the dense matrix): both must describe one matrix
    from spnir.imresize import _resize_bands

    out_length = output_length(in_length, scale)

    def assembled(band_rows: int) -> torch.Tensor:
        matrix = torch.zeros(out_length, in_length, dtype=torch.float64)
        for band in _resize_bands(in_length, out_length, scale, True, band_rows):
            matrix[band.out_start : band.out_stop, band.in_start : band.in_stop] += band.weights
        return matrix

    dense = assembled(out_length)
    torch.testing.assert_close(assembled(16), dense, atol=0, rtol=0)
    torch.testing.assert_close(dense.sum(dim=1), torch.ones(out_length, dtype=torch.float64))
