"""Training patches: alignment across scales, identical augmentation, seeding, resume, sources and errors."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader

from spnir.data import (
    CleanImages,
    EpochSampler,
    PairedFolder,
    PatchDataset,
    SyntheticPairs,
    augment,
    build_degradation,
    paired_random_crop,
    sample_generator,
)
from spnir.data.degrade import bicubic, haze
from spnir.errors import SpnirError


def pattern(h: int, w: int, seed: int = 0) -> torch.Tensor:
    """An 8-bit-exact image whose box downscale by 2 is exact too (values are multiples of 4/255)."""
    rng = np.random.default_rng(seed)
    return torch.from_numpy(rng.integers(0, 64, (3, h, w)) * 4 / 255.0).float()


def box_down(x: torch.Tensor, s: int) -> torch.Tensor:
    return F.avg_pool2d(x[None], s)[0]


def write_png(path: Path, img: torch.Tensor) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((img * 255).round().byte().permute(1, 2, 0).numpy()).save(path)


@pytest.fixture
def sr_folder(tmp_path) -> PairedFolder:
    for i in range(3):
        gt = pattern(48, 64, seed=i)
        write_png(tmp_path / "HR" / f"{i:04d}.png", gt)
        write_png(tmp_path / "LR" / f"{i:04d}x2.png", box_down(gt, 2))
    return PairedFolder(tmp_path / "LR", tmp_path / "HR", scale=2)


@pytest.mark.parametrize("scale", [2, 4])
def test_paired_crop_and_augment_stay_aligned(scale):
    gt = pattern(64, 80)
    lq = box_down(gt, scale)
    for seed in range(8):
        g = sample_generator(0, 0, seed)
        lq_p, gt_p = paired_random_crop(lq, gt, 8 * scale, scale, g)
        lq_p, gt_p = augment([lq_p, gt_p], g)
        assert lq_p.shape == (3, 8, 8) and gt_p.shape == (3, 8 * scale, 8 * scale)
        assert torch.allclose(box_down(gt_p, scale), lq_p, atol=1e-6)


def test_augment_covers_the_eight_symmetries_identically():
    x = torch.arange(9.0).view(1, 3, 3)
    seen = set()
    for seed in range(64):
        a, b = augment([x, x * 10], sample_generator(1, 0, seed))
        assert torch.equal(b, a * 10)
        seen.add(tuple(a.flatten().tolist()))
    assert len(seen) == 8
    still = augment([x], torch.Generator().manual_seed(0), hflip=False, vflip=False, rot90=False)[0]
    assert torch.equal(still, x)


def test_patch_dataset_over_paired_folder(sr_folder):
    ds = PatchDataset(sr_folder, patch_size=16, enlarge_ratio=4, base_seed=3)
    assert ds.scale == 2 and len(ds) == 12
    item = ds[(0, 5)]
    assert item["lq"].shape == (3, 8, 8) and item["gt"].shape == (3, 16, 16)
    assert torch.allclose(box_down(item["gt"], 2), item["lq"], atol=1e-6)
    assert item["gt_path"].endswith("0002.png")  # index 5 of an enlarged set of 3 images
    again = ds[(0, 5)]
    assert torch.equal(item["lq"], again["lq"]) and torch.equal(item["gt"], again["gt"])
    assert not torch.equal(ds[(1, 5)]["gt"], item["gt"])
    assert not torch.equal(PatchDataset(sr_folder, 16, base_seed=4)[(0, 2)]["gt"], ds[(0, 2)]["gt"])
    ds.epoch = 1
    assert torch.equal(ds[5]["gt"], ds[(1, 5)]["gt"])
    cached = PatchDataset(sr_folder, patch_size=16, enlarge_ratio=4, base_seed=3, cache=True)
    for index in range(len(ds)):
        for key in ("lq", "gt"):
            assert torch.equal(cached[(0, index)][key], ds[(0, index)][key])
    assert cached[(0, 5)]["gt"].dtype == torch.float32
    assert all(entry["gt"].dtype == torch.uint8 for entry in cached._cache)  # 8-bit files: a quarter of the memory


def test_cache_keeps_images_off_the_8bit_grid_as_float():
    off_grid = torch.rand(3, 20, 20)
    clean = CleanImages(images=[off_grid], names=["x"])
    ds = PatchDataset(clean, patch_size=8, degradation=build_degradation([{"type": "noise", "sigma": 5}]),
                      cache=True)
    assert ds._cache[0]["gt"].dtype == torch.float32
    plain = PatchDataset(clean, patch_size=8, degradation=build_degradation([{"type": "noise", "sigma": 5}]))
    assert torch.equal(ds[(0, 0)]["gt"], plain[(0, 0)]["gt"]) and torch.equal(ds[(0, 0)]["lq"], plain[(0, 0)]["lq"])


def test_epoch_sampler_order_and_resume():
    sampler = EpochSampler(10, base_seed=7)
    first = list(sampler)
    assert [e for e, _ in first] == [0] * 10 and sorted(i for _, i in first) == list(range(10))
    assert list(EpochSampler(10, base_seed=7)) == first
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first and all(e == 1 for e, _ in second)
    sampler.set_epoch(1, skip=4)
    assert list(sampler) == second[4:] and len(sampler) == 6
    assert [i for _, i in EpochSampler(4, shuffle=False)] == [0, 1, 2, 3]
    with pytest.raises(SpnirError, match="skip must be in 0..10"):
        sampler.set_epoch(0, skip=11)


def test_workers_and_resume_reproduce_the_same_batches(sr_folder):
    ds = PatchDataset(sr_folder, patch_size=16, enlarge_ratio=4, base_seed=11)

    def batches(num_workers: int, epoch: int, skip: int = 0) -> list[torch.Tensor]:
        sampler = EpochSampler(len(ds), base_seed=11)
        sampler.set_epoch(epoch, skip=skip)
        loader = DataLoader(ds, batch_size=3, sampler=sampler, num_workers=num_workers)
        return [b["gt"] for b in loader]

    single = batches(0, epoch=2)
    assert len(single) == 4
    assert all(torch.equal(a, b) for a, b in zip(single, batches(2, epoch=2)))
    assert all(torch.equal(a, b) for a, b in zip(single[2:], batches(0, epoch=2, skip=6)))


def test_clean_images_with_sr_degradation_make_8bit_bicubic_lr():
    src = CleanImages([pattern(40, 52, seed=s) for s in range(2)], names=["a", "b"])
    ds = PatchDataset(src, patch_size=24, degradation=build_degradation("sr", scale=4), base_seed=1)
    assert ds.scale == 4
    item = ds[(0, 1)]
    assert item["gt"].shape == (3, 24, 24) and item["lq"].shape == (3, 6, 6)
    assert torch.equal(item["lq"], bicubic(item["gt"], 4))
    assert torch.equal(item["lq"] * 255, (item["lq"] * 255).round())
    assert item["gt_path"] == item["lq_path"] == "b"
    with pytest.raises(SpnirError, match="scale 2 does not match the degradation pipeline's scale 4"):
        PatchDataset(src, 24, scale=2, degradation=build_degradation("sr", scale=4))
    with pytest.raises(SpnirError, match="multiple of scale 4"):
        PatchDataset(src, 26, degradation=build_degradation("sr", scale=4))


def test_haze_depth_is_cropped_and_augmented_with_the_image():
    gt = pattern(40, 40)
    depth = gt[:1].clone()  # depth equal to the red channel: alignment is visible in the result
    src = CleanImages([gt], depths=[depth])
    deg = build_degradation([{"type": "haze", "beta": 1.5, "airlight": 0.9}])
    ds = PatchDataset(src, patch_size=16, degradation=deg, enlarge_ratio=6)
    for i in range(6):
        item = ds[(0, i)]
        assert torch.allclose(item["lq"], haze(item["gt"], 1.5, 0.9, item["gt"][:1]), atol=1e-6)


def test_synthetic_pairs_are_fixed_per_index():
    src = CleanImages([pattern(30, 34, seed=s) for s in range(2)])
    val = SyntheticPairs(src, build_degradation([{"type": "noise", "sigma": [5, 50]}]), seed=2)
    a, b = val[1], val[1]
    assert torch.equal(a["lq"], b["lq"]) and not torch.equal(val[0]["lq"] - val[0]["gt"], a["lq"] - a["gt"])
    sr = SyntheticPairs(src, build_degradation("sr", scale=4))[0]
    assert sr["gt"].shape == (3, 28, 32) and sr["lq"].shape == (3, 7, 8)


def test_patch_larger_than_image_named_at_construction(sr_folder, tmp_path):
    with pytest.raises(SpnirError, match=r"GT patch 56x56 is larger than 3 image\(s\).*0000.png is 64x48"):
        PatchDataset(sr_folder, patch_size=56)
    small = CleanImages([pattern(20, 30)], names=["tiny.png"])
    with pytest.raises(SpnirError, match="tiny.png is 30x20"):
        PatchDataset(small, 24, degradation=build_degradation("denoise"))
    with pytest.raises(SpnirError, match="enlarge_ratio"):
        PatchDataset(sr_folder, 16, enlarge_ratio=0)


def test_clean_images_from_folder(tmp_path):
    write_png(tmp_path / "clean" / "x.png", pattern(20, 24))
    src = CleanImages.from_folder(tmp_path / "clean")
    assert src.gt_sizes()[0][1:] == (20, 24) and src[0]["gt"].shape == (3, 20, 24)
    with pytest.raises(SpnirError, match="no image files"):
        CleanImages.from_folder(tmp_path)


def test_set14_with_grayscale_bridge_feeds_sr_patches(shared_data):
    src = CleanImages.from_folder(shared_data / "Set14")
    ds = PatchDataset(src, 96, degradation=build_degradation("sr", scale=4))
    names = [Path(n).name for n, _, _ in src.gt_sizes()]
    item = ds[(0, names.index("bridge.png"))]
    assert item["gt"].shape == (3, 96, 96) and item["lq"].shape == (3, 24, 24)
    assert torch.equal(item["gt"][0], item["gt"][1])  # grayscale replicated to RGB


def test_crop_errors_name_the_image():
    from spnir.data.sampling import random_crop_box

    g = sample_generator(0, 0, 0)
    with pytest.raises(SpnirError, match=r"^a/b\.png: patch 9x9 is larger than the image 8x8"):
        random_crop_box(8, 8, 9, g, name="a/b.png")
    with pytest.raises(SpnirError, match=r"^lq\.png: LQ 4x4 and GT 9x8"):
        paired_random_crop(torch.rand(3, 4, 4), torch.rand(3, 8, 9), 4, 2, g, name="lq.png")

    class Pairs(torch.utils.data.Dataset):  # a source without gt_sizes: nothing is checked up front
        def __len__(self):
            return 1

        def __getitem__(self, i):
            return {"lq": torch.rand(3, 3, 3), "gt": torch.rand(3, 6, 6), "lq_path": "small_lq.png",
                    "gt_path": "small_gt.png"}

    source = Pairs()
    source.scale = 2
    with pytest.raises(SpnirError, match=r"^small_lq\.png: patch 4x4 is larger than the image 3x3"):
        PatchDataset(source, patch_size=8)[0]
