"""PairedFolder: every layout on a small folder written here, plus the bad-input errors."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spnir.data import PairedFolder
from spnir.errors import SpnirError, worded_as_options


def write(path: Path, width: int, height: int, seed: int = 0, mode: str = "RGB") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    shape = (height, width, 3) if mode == "RGB" else (height, width)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path)
    return path


def test_sr_div2k_layout_auto(tmp_path, caplog):
    for i in (1, 2):
        write(tmp_path / "HR" / f"000{i}.png", 32, 24, seed=i)
        write(tmp_path / "LR_bicubic" / "X4" / f"000{i}x4.png", 8, 6, seed=10 + i)
    with caplog.at_level(logging.INFO, logger="spnir.data"):
        ds = PairedFolder(tmp_path / "LR_bicubic" / "X4", tmp_path / "HR", scale=4)
    assert ds.layout == "sr" and len(ds) == 2
    assert "'sr'" in caplog.text
    item = ds[1]
    assert item["lq"].shape == (3, 6, 8) and item["gt"].shape == (3, 24, 32)
    assert item["lq"].dtype == torch.float32 and 0 <= float(item["gt"].min()) and float(item["gt"].max()) <= 1
    assert item["lq_path"].endswith("0002x4.png") and item["gt_path"].endswith("0002.png")


def test_sr_hr_not_multiple_of_scale_is_mod_cropped(tmp_path):
    gt = write(tmp_path / "HR" / "a.png", 35, 26)
    write(tmp_path / "LR" / "a.png", 8, 6)  # Set5-style: LR keeps the HR name
    item = PairedFolder(tmp_path / "LR", tmp_path / "HR", layout="sr", scale=4)[0]
    full = torch.from_numpy(np.array(Image.open(gt))).permute(2, 0, 1).float() / 255
    assert torch.equal(item["gt"], full[:, :24, :32])


def test_sr_size_mismatch_says_sizes_and_scale(tmp_path):
    write(tmp_path / "HR" / "0001.png", 40, 24)
    write(tmp_path / "LR" / "0001x4.png", 8, 6)
    with pytest.raises(SpnirError, match=r"0001x4.png.*8x6.*40x24.*at scale 4.*32x24"):
        PairedFolder(tmp_path / "LR", tmp_path / "HR", scale=4)


def test_sr_names_without_scale_hint(tmp_path):
    write(tmp_path / "HR" / "0001.png", 32, 24)
    write(tmp_path / "LR" / "0001x4.png", 8, 6)
    with pytest.raises(SpnirError, match="give its scale \\(scale=4; model.scale: 4 in a training config"):
        PairedFolder(tmp_path / "LR", tmp_path / "HR")
    with worded_as_options({"scale": "--scale"}), pytest.raises(SpnirError, match="give its scale \\(--scale 4;"):
        PairedFolder(tmp_path / "LR", tmp_path / "HR")  # as spnir eval words it


def test_reside_several_hazy_per_clear_and_ots_names(tmp_path):
    for name in ("1400_1.png", "1400_2.png", "1401_1.png", "0001_0.8_0.2.jpg"):
        write(tmp_path / "hazy" / name, 20, 16)
    for name in ("1400.png", "1401.png", "0001.png", "1402.png"):
        write(tmp_path / "clear" / name, 20, 16)
    ds = PairedFolder(tmp_path / "hazy", tmp_path / "clear")
    assert ds.layout == "reside" and len(ds) == 4
    pairs = {Path(p.lq).name: Path(p.gt).name for p in ds.pairs}
    assert pairs == {"1400_1.png": "1400.png", "1400_2.png": "1400.png", "1401_1.png": "1401.png",
                     "0001_0.8_0.2.jpg": "0001.png"}


def test_reside_clear_with_border_is_centre_cropped(tmp_path):
    write(tmp_path / "hazy" / "1_1.png", 20, 16)
    gt = write(tmp_path / "clear" / "1.png", 24, 20)
    item = PairedFolder(tmp_path / "hazy", tmp_path / "clear", layout="reside")[0]
    full = torch.from_numpy(np.array(Image.open(gt))).permute(2, 0, 1).float() / 255
    assert torch.equal(item["gt"], full[:, 2:18, 2:22])


@pytest.mark.parametrize("one_folder", [False, True])
def test_rain100(tmp_path, one_folder):
    lq_dir = tmp_path / ("all" if one_folder else "rain")
    gt_dir = tmp_path / ("all" if one_folder else "norain")
    for i in (1, 2, 3):
        write(lq_dir / f"rain-{i:03d}.png", 12, 10, seed=i)
        write(gt_dir / f"norain-{i:03d}.png", 12, 10, seed=i + 5)
    ds = PairedFolder(lq_dir, gt_dir)
    assert ds.layout == "rain100" and len(ds) == 3
    assert Path(ds[2]["gt_path"]).name == "norain-003.png"


def test_ddn_fourteen_rainy_per_clean(tmp_path):
    for i in (1, 2):
        write(tmp_path / "ground_truth" / f"{i}.jpg", 12, 10)
        for k in range(1, 15):
            write(tmp_path / "rainy_image" / f"{i}_{k}.jpg", 12, 10, seed=k)
    ds = PairedFolder(tmp_path / "rainy_image", tmp_path / "ground_truth")
    assert ds.layout == "ddn" and len(ds) == 28
    assert all(Path(p.gt).stem == Path(p.lq).stem.split("_")[0] for p in ds.pairs)


def test_gopro_split_folders_nested_per_sequence(tmp_path):
    for seq in ("GOPR0372_07_00", "GOPR0374_11_00"):
        for f in ("000047.png", "000048.png"):
            write(tmp_path / "blur" / seq / f, 16, 12)
            write(tmp_path / "sharp" / seq / f, 16, 12, seed=3)
    ds = PairedFolder(tmp_path / "blur", tmp_path / "sharp")
    assert ds.layout == "gopro" and len(ds) == 4
    assert all(p.lq.relative_to(tmp_path / "blur") == p.gt.relative_to(tmp_path / "sharp") for p in ds.pairs)


def test_gopro_original_tree(tmp_path):
    for seq in ("GOPR0372_07_00", "GOPR0374_11_00"):
        write(tmp_path / seq / "blur" / "000047.png", 16, 12)
        write(tmp_path / seq / "blur_gamma" / "000047.png", 16, 12)
        write(tmp_path / seq / "sharp" / "000047.png", 16, 12, seed=3)
    ds = PairedFolder(tmp_path, tmp_path)
    assert ds.layout == "gopro" and len(ds) == 4
    assert {p.gt.parent.name for p in ds.pairs} == {"sharp"}


def test_csv_pair_list(tmp_path):
    write(tmp_path / "in" / "x.png", 10, 8)
    write(tmp_path / "out" / "y.png", 20, 16)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("lq,gt\n# a comment\nx.png,y.png\n")
    ds = PairedFolder(tmp_path / "in", tmp_path / "out", scale=2, pairs=pairs)
    assert ds.layout == "csv" and len(ds) == 1 and ds[0]["gt"].shape == (3, 16, 20)
    pairs.write_text("x.png,missing.png\n")
    with pytest.raises(SpnirError, match="missing.png"):
        PairedFolder(tmp_path / "in", tmp_path / "out", scale=2, pairs=pairs)


def test_grayscale_replicated(tmp_path):
    write(tmp_path / "lq" / "a.png", 10, 8, mode="L")
    write(tmp_path / "gt" / "a.png", 10, 8, mode="L")
    item = PairedFolder(tmp_path / "lq", tmp_path / "gt")[0]
    assert item["lq"].shape == (3, 8, 10) and torch.equal(item["lq"][0], item["lq"][2])


def test_unmatched_names_are_listed(tmp_path):
    write(tmp_path / "lq" / "a.png", 10, 8)
    write(tmp_path / "lq" / "b.png", 10, 8)
    write(tmp_path / "lq" / "zz_lonely.png", 10, 8)
    write(tmp_path / "gt" / "a.png", 10, 8)
    write(tmp_path / "gt" / "b.png", 10, 8)
    with pytest.raises(SpnirError, match=r"1 of 3.*zz_lonely.png"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    with pytest.raises(SpnirError, match=r"rain100.*a.png"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt", layout="rain100")


def test_empty_missing_and_unknown(tmp_path):
    (tmp_path / "empty").mkdir()
    write(tmp_path / "gt" / "a.png", 10, 8)
    with pytest.raises(SpnirError, match="empty: no image files"):
        PairedFolder(tmp_path / "empty", tmp_path / "gt")
    with pytest.raises(SpnirError, match="nope.*not found"):
        PairedFolder(tmp_path / "nope", tmp_path / "gt")
    with pytest.raises(SpnirError, match="unknown layout 'div2k'"):
        PairedFolder(tmp_path / "gt", tmp_path / "gt", layout="div2k")
    with pytest.raises(SpnirError, match="layout .csv. needs a pair list"):
        PairedFolder(tmp_path / "gt", tmp_path / "gt", layout="csv")


def test_unreadable_and_truncated_files(tmp_path):
    write(tmp_path / "gt" / "a.png", 32, 32)
    (tmp_path / "lq").mkdir()
    (tmp_path / "lq" / "a.png").write_bytes(b"not an image at all")
    with pytest.raises(SpnirError, match=r"lq/a.png: cannot read image header"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt")
    good = (tmp_path / "gt" / "a.png").read_bytes()
    (tmp_path / "lq" / "a.png").write_bytes(good[: len(good) // 2])  # header intact, pixels cut
    ds = PairedFolder(tmp_path / "lq", tmp_path / "gt")
    with pytest.raises(SpnirError, match=r"lq/a.png: cannot read image"):
        ds[0]
    with pytest.raises(SpnirError, match=r"lq/a.png: cannot read image"):
        PairedFolder(tmp_path / "lq", tmp_path / "gt", verify=True)


def test_auto_prefers_sr_over_equal_names_at_scale_above_one(tmp_path, caplog):
    # Equal names fit 'gopro' too, but only 'sr' crops an HR that is not a multiple of the scale.
    gt = write(tmp_path / "HR" / "img.png", 50, 50)
    write(tmp_path / "LR" / "img.png", 12, 12)
    with caplog.at_level(logging.INFO, logger="spnir.data"):
        ds = PairedFolder(tmp_path / "LR", tmp_path / "HR", scale=4)
    assert ds.layout == "sr"
    assert "'sr' chosen" in caplog.text and "gopro" in caplog.text
    full = torch.from_numpy(np.array(Image.open(gt))).permute(2, 0, 1).float() / 255
    assert torch.equal(ds[0]["gt"], full[:, :48, :48])


def test_auto_keeps_gopro_for_nested_equal_names_at_scale_above_one(tmp_path):
    write(tmp_path / "HR" / "seq1" / "0001.png", 48, 48)
    write(tmp_path / "LR" / "seq1" / "0001.png", 12, 12)
    ds = PairedFolder(tmp_path / "LR", tmp_path / "HR", scale=4)
    assert ds.layout == "gopro" and len(ds) == 1


def test_sr_gt_box_is_the_rule_of_folder_and_evaluation():
    from spnir.data.paired import sr_gt_box
    from spnir.evaluation import reconcile_pair

    assert sr_gt_box((12, 12), (48, 48), 4) == (0, 0, 48, 48)
    assert sr_gt_box((12, 12), (51, 50), 4) == (0, 0, 48, 48)
    assert sr_gt_box((12, 12), (52, 48), 4) is None and sr_gt_box((12, 12), (47, 48), 4) is None
    assert sr_gt_box((12, 12), (13, 12), 1) is None
    gt = torch.rand(3, 51, 50)
    assert torch.equal(reconcile_pair(torch.rand(3, 12, 12), gt, 4, Path("l"), Path("g")), gt[:, :48, :48])
    with pytest.raises(SpnirError, match="the GT should be 48x48"):
        reconcile_pair(torch.rand(3, 12, 12), torch.rand(3, 52, 48), 4, Path("l"), Path("g"))
