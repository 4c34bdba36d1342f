"""The builtin scikit-image set: bundled (no download), split, depth from the stereo disparity."""
from __future__ import annotations

import pytest
import torch

from spnir.data import CleanImages, builtin
from spnir.errors import SpnirError
from spnir.imageio import read_image


def test_splits_are_disjoint_and_keep_the_stereo_pair_together():
    train, val = set(builtin.names("train")), set(builtin.names("val"))
    assert not train & val and train | val == set(builtin.NAMES)
    assert {"motorcycle_left", "motorcycle_right"} <= val
    with pytest.raises(SpnirError, match="unknown builtin split"):
        builtin.names("test")


def test_every_image_is_bundled_rgb_in_unit_range():
    for name, img in zip(builtin.NAMES, builtin.images("all")):
        assert img.dtype == torch.float32 and img.shape[0] == 3 and min(img.shape[1:]) >= 256, name
        assert 0 <= float(img.min()) and float(img.max()) <= 1
    assert builtin.image("retina").shape == (3, 470, 470)
    with pytest.raises(SpnirError, match="unknown builtin image 'lily'"):
        builtin.image("lily")


def test_motorcycle_depth_from_disparity():
    d = builtin.depth("motorcycle_left")
    metric = builtin.depth("motorcycle_left", metric=True)
    assert d.shape == (1, 500, 741) and torch.isfinite(metric).all()
    assert float(d.max()) == 1.0 and float(d.min()) > 0.3
    assert 1.5 < float(metric.min()) < float(metric.max()) < 6.0  # a garage scene, metres
    with pytest.raises(SpnirError, match="has no depth map"):
        builtin.depth("astronaut")
    src = CleanImages.builtin("val")
    item = src[builtin.names("val").index("motorcycle_left")]
    assert item["gt_path"] == "builtin:motorcycle_left" and torch.equal(item["depth"], d)


def test_write_folder_round_trips(tmp_path):
    paths = builtin.write_folder(tmp_path / "val", split="val")
    assert [p.stem for p in paths] == list(builtin.names("val"))
    assert torch.equal(read_image(paths[0]), builtin.image(builtin.names("val")[0]))
