"""Benchmark evaluation: published bicubic numbers, bad images skipped or stopping, paired sets, `spnir eval`."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spnir.cli import main
from spnir.errors import SpnirError
from spnir.evaluation import (
    BenchmarkSet,
    Evaluator,
    ImageResult,
    SetResult,
    SkippedImage,
    average,
    find_set,
    format_table,
    results_json,
    synthesize_lr,
)
from spnir.imresize import imresize
from spnir.metrics import MetricSettings

# Published bicubic rows (Set5, Y channel, border = scale), computed with MATLAB: scale -> (PSNR, SSIM)
PUBLISHED_SET5_BICUBIC = {2: (33.66, 0.9299), 3: (30.39, 0.8682), 4: (28.42, 0.8104)}


def _rgb(h: int, w: int, seed: int) -> np.ndarray:
    """A smooth-ish colour image (gradients plus a little noise), so bicubic SR is meaningful."""
    rng = np.random.RandomState(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (h + w)], axis=2)
    return np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)


def _save(path: Path, array: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)  # mode from the array: RGB, L, RGBA, I;16 (uint16)
    return path


def _bicubic(scale: int):
    return lambda lq: imresize(lq, scale)


@pytest.fixture
def messy_set(tmp_path: Path) -> Path:
    """Two good images, a grayscale one and every kind of file that must be skipped with a reason."""
    folder = tmp_path / "Messy"
    _save(folder / "good1.png", _rgb(40, 36, 1))
    _save(folder / "good2.png", _rgb(33, 45, 2))  # not a multiple of 4: cropped
    _save(folder / "gray.png", _rgb(40, 40, 3)[..., 0])
    _save(folder / "deep.png", (np.arange(40 * 40).reshape(40, 40) * 40).astype(np.uint16))
    rgba = np.dstack([_rgb(40, 40, 4), np.full((40, 40), 100, np.uint8)])
    _save(folder / "transparent.png", rgba)
    data = (_save(tmp_path / "whole.png", _rgb(40, 40, 5))).read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    _save(folder / "tiny.png", _rgb(3, 3, 6))  # smaller than the scale
    return folder


def test_set5_matlab_convention_reproduces_published_bicubic(shared_data: Path) -> None:
    for scale, (want_psnr, want_ssim) in PUBLISHED_SET5_BICUBIC.items():
        settings = MetricSettings(crop_border=scale, y_channel=True, convention="matlab")
        evaluator = Evaluator(_bicubic(scale), settings, scale=scale, lr_protocol="classic", show_progress=False)
        result = evaluator.run_set(find_set(shared_data / "Set5", "sr", scale))
        assert len(result.images) == 5 and not result.skipped
        assert abs(result.psnr - want_psnr) <= 0.01, (scale, result.psnr)
        assert abs(result.ssim - want_ssim) <= 0.0005, (scale, result.ssim)


def test_set14_grayscale_image_is_replicated_and_reported(shared_data: Path) -> None:
    evaluator = Evaluator(_bicubic(4), MetricSettings(4), scale=4, show_progress=False)
    result = evaluator.run_set(find_set(shared_data / "Set14", "sr", 4))
    assert len(result.images) == 14 and not result.skipped
    bridge = next(r for r in result.images if r.name == "bridge.png")
    assert bridge.notes == ["grayscale, replicated to 3 channels"]


def test_bad_images_are_skipped_with_reasons(messy_set: Path) -> None:
    evaluator = Evaluator(_bicubic(4), MetricSettings(4), scale=4, show_progress=False)
    result = evaluator.run_set(find_set(messy_set, "sr", 4))
    assert sorted(r.name for r in result.images) == ["good1.png", "good2.png", "gray.png"]
    reasons = {s.name: s.reason for s in result.skipped}
    assert set(reasons) == {"deep.png", "transparent.png", "truncated.png", "tiny.png"}
    assert "16-bit" in reasons["deep.png"] and "deep.png" in reasons["deep.png"]
    assert "transparency" in reasons["transparent.png"]
    assert "cannot read image" in reasons["truncated.png"]
    assert "smaller than the scale 4" in reasons["tiny.png"]
    assert result.psnr == pytest.approx(np.mean([r.psnr for r in result.images]))
    table = format_table("Bicubic x4", [result], "caption")
    assert "3 images measured, 4 skipped" in table and "skipped truncated.png" in table
    assert "note Messy/gray.png: grayscale, replicated to 3 channels" in table


def test_stop_policy_raises_on_first_bad_image(messy_set: Path) -> None:
    evaluator = Evaluator(_bicubic(4), MetricSettings(4), scale=4, on_error="stop", show_progress=False)
    with pytest.raises(SpnirError, match="deep.png: 16-bit PNG"):
        evaluator.run_set(find_set(messy_set, "sr", 4))


def test_rgb8_protocol_rounds_lr_like_benchmark_files() -> None:
    hr = torch.from_numpy(_rgb(34, 30, 7)).permute(2, 0, 1).float() / 255
    lq, gt = synthesize_lr(hr, 4)
    assert gt.shape == (3, 32, 28) and lq.shape == (3, 8, 7)
    torch.testing.assert_close(lq * 255, (lq * 255).round())
    lq_y, gt_y = synthesize_lr(hr, 4, "classic")
    assert gt_y.shape == (1, 32, 28) and lq_y.shape == (1, 8, 7)


def _paired(tmp_path: Path, scale: int) -> tuple[Path, Path]:
    lq_dir, gt_dir = tmp_path / "Pairs" / "LQ", tmp_path / "Pairs" / "GT"
    for i, name in enumerate(["a", "b", "c"]):
        gt = _rgb(32, 24, 10 + i)
        _save(gt_dir / f"{name}.png", gt)
        lq = gt if scale == 1 else _rgb(32 // scale, 24 // scale, 20 + i)
        _save(lq_dir / f"{name}.png", lq)
    _save(lq_dir / "c.png", _rgb(30, 24, 30) if scale == 1 else _rgb(7, 6, 30))  # wrong size
    return lq_dir, gt_dir


def test_paired_set_measures_restore_fn_and_skips_wrong_sizes(tmp_path: Path) -> None:
    lq_dir, gt_dir = _paired(tmp_path, 1)
    bset = find_set(tmp_path / "Pairs", "denoise")
    assert bset == BenchmarkSet("Pairs", gt_dir, lq_dir)
    evaluator = Evaluator(lambda lq: lq, MetricSettings(0, y_channel=False), show_progress=False)
    result = evaluator.run_set(bset)
    assert [r.name for r in result.images] == ["a.png", "b.png"]
    assert all(math.isinf(r.psnr) and r.ssim == pytest.approx(1.0) for r in result.images)
    assert len(result.skipped) == 1 and "GT should be 24x30" in result.skipped[0].reason


def test_paired_sr_set_checks_scale(tmp_path: Path) -> None:
    lq_dir, gt_dir = _paired(tmp_path, 4)
    evaluator = Evaluator(_bicubic(4), MetricSettings(4), scale=4, show_progress=False)
    result = evaluator.run_set(BenchmarkSet("Pairs", gt_dir, lq_dir))
    assert len(result.images) == 2
    assert "c.png: LQ is 6x7 (WxH)" in result.skipped[0].reason and "with scale 4" in result.skipped[0].reason


def test_mismatched_names_and_empty_folders_skip_the_set(tmp_path: Path) -> None:
    for lq_name, gt_name in [("a", "a"), ("b", "b"), ("x", "y")]:
        _save(tmp_path / "P" / "LQ" / f"{lq_name}.png", _rgb(16, 16, 1))
        _save(tmp_path / "P" / "GT" / f"{gt_name}.png", _rgb(16, 16, 1))
    (tmp_path / "Empty").mkdir()
    evaluator = Evaluator(lambda lq: lq, MetricSettings(0), show_progress=False)
    pairs = evaluator.run_set(find_set(tmp_path / "P", "derain"))
    assert not pairs.images and "1 of 3 LQ images without GT" in pairs.skipped[0].reason
    assert pairs.skipped[0].reason.endswith(": x.png; e.g. LQ x.png has no GT, GT y.png has no LQ")
    empty = evaluator.run_set(BenchmarkSet("Empty", tmp_path / "Empty"))
    assert not empty.images and "no image files found" in empty.skipped[0].reason
    assert "n/a" in format_table("m", [pairs, empty], "c")
    assert results_json([empty])["Empty"]["psnr"] is None
    assert results_json([empty])["Avg."] == {"psnr": None, "ssim": None, "sets": [], "missing": ["Empty"],
                                             "partial": []}
    with pytest.raises(SpnirError, match="needs LQ/GT folder pairs"):
        find_set(tmp_path / "Empty", "dehaze")


def test_model_output_of_wrong_size_is_reported(tmp_path: Path) -> None:
    _save(tmp_path / "S" / "a.png", _rgb(16, 16, 1))
    evaluator = Evaluator(_bicubic(2), MetricSettings(4), scale=4, show_progress=False)
    result = evaluator.run_set(find_set(tmp_path / "S", "sr", 4))
    assert "output is (1, 3, 8, 8), expected (1, 3, 16, 16)" in result.skipped[0].reason


def test_cli_table_and_json(messy_set: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out_json = tmp_path / "out" / "scores.json"
    clean = tmp_path / "Clean"
    _save(clean / "a.png", _rgb(40, 40, 8))
    rc = main(["eval", "--model", "bicubic", "--task", "sr", "--scale", "4", "--data", str(clean), str(messy_set),
               "--json", str(out_json), "--no-progress"])
    assert rc == 0
    printed = capsys.readouterr()
    header = [line for line in printed.out.splitlines() if line.startswith("Method")][0]
    assert header.split() == ["Method", "Avg.", "Clean", "Messy"]
    assert "Bicubic x4" in printed.out and "4 skipped" in printed.out
    assert "skipped Messy/deep.png" in printed.err
    scores = json.loads(out_json.read_text())
    assert list(scores) == ["Avg.", "Clean", "Messy"]
    assert scores["Avg."]["sets"] == ["Clean", "Messy"] and scores["Avg."]["partial"] == ["Messy"]
    assert scores["Messy"]["images"] == 3 and len(scores["Messy"]["skipped"]) == 4
    assert {"psnr", "ssim", "images"} <= set(scores["Clean"])
    assert f"{scores['Clean']['psnr']:.2f}/{scores['Clean']['ssim']:.4f}" in printed.out


def test_cli_stop_policy_and_argument_errors(messy_set: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["eval", "--scale", "4", "--data", str(messy_set), "--on-error", "stop", "--no-progress"]) == 2
    assert "16-bit PNG" in capsys.readouterr().err
    assert main(["eval", "--data", str(messy_set)]) == 2
    assert "--task sr needs --scale" in capsys.readouterr().err
    assert main(["eval", "--task", "dehaze", "--pair", str(messy_set), str(messy_set)]) == 2
    assert "needs a trained --model" in capsys.readouterr().err


def test_cli_spnir_checkpoint_with_recorded_overrides_and_set(tmp_path: Path) -> None:
    from spnir.archs import create_model
    from spnir.archs.model_files import save_model_checkpoint

    torch.manual_seed(0)
    trained = create_model("edsr-baseline", 2, num_feat=16, num_block=1)
    ckpt = save_model_checkpoint(trained, tmp_path / "edsr16.pth")
    hr = tmp_path / "HR"
    _save(hr / "a.png", _rgb(24, 20, 7))

    def measure(*extra: str) -> float:
        out = tmp_path / f"r{len(list(tmp_path.glob('r*.json')))}.json"
        code = main(["eval", "--checkpoint", str(ckpt), "--scale", "2", "--data", str(hr), "--no-progress",
                     "--device", "cpu", "--json", str(out), *extra])
        assert code == 0
        return json.loads(out.read_text())["HR"]["psnr"]

    def reference(model: torch.nn.Module) -> float:
        model.load_state_dict(trained.state_dict())
        model.eval()
        settings = MetricSettings(crop_border=2, y_channel=True, convention="basicsr")
        with torch.no_grad():
            return Evaluator(lambda lq: model(lq).clamp(0, 1), settings, scale=2, show_progress=False).run_set(
                find_set(hr, "sr", 2)).psnr

    # the recorded num_feat=16 is used with or without --model
    plain = reference(create_model("edsr-baseline", 2, num_feat=16, num_block=1))
    assert measure() == pytest.approx(plain, abs=1e-9)
    assert measure("--model", "edsr-baseline") == pytest.approx(plain, abs=1e-9)
    # --set goes on top of the recorded overrides
    halved = reference(create_model("edsr-baseline", 2, num_feat=16, num_block=1, res_scale=0.5))
    assert halved != pytest.approx(plain, abs=1e-6)
    assert measure("--set", "res_scale=0.5") == pytest.approx(halved, abs=1e-9)


def test_cli_checkpoint_scale_and_set_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    from spnir.archs import create_model
    from spnir.archs.model_files import save_model_checkpoint

    ckpt = save_model_checkpoint(create_model("edsr-baseline", 2, num_feat=8, num_block=1), tmp_path / "e.pth")
    _save(tmp_path / "HR" / "a.png", _rgb(24, 20, 8))
    assert main(["eval", "--checkpoint", str(ckpt), "--scale", "4", "--data", str(tmp_path / "HR")]) == 2
    assert "trained for scale 2; got --scale 4" in capsys.readouterr().err
    assert main(["eval", "--checkpoint", str(ckpt), "--scale", "2", "--data", str(tmp_path / "HR"),
                 "--set", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err
    assert main(["eval", "--scale", "2", "--data", str(tmp_path / "HR"), "--set", "local=true"]) == 2
    assert "no --set" in capsys.readouterr().err


def _result(name: str, psnrs: list[float], skipped: int = 0) -> SetResult:
    return SetResult(name, [ImageResult(f"{i}.png", {"psnr": p, "ssim": 0.9}) for i, p in enumerate(psnrs)],
                     [SkippedImage(f"bad{i}.png", "cannot read image") for i in range(skipped)])


def test_average_says_which_sets_it_leaves_out() -> None:
    full = [_result("Set5", [30.0]), _result("Set14", [28.0])]
    table = format_table("m", full, "c")
    assert "30.00/0.9000  28.00/0.9000" in table and "*" not in table
    assert results_json(full)["Avg."]["missing"] == [] and results_json(full)["Avg."]["psnr"] == 29.0

    missing = [_result("Set5", [30.0]), _result("Urban100", [], skipped=3), _result("Set14", [28.0])]
    table = format_table("m", missing, "c")
    row = table.splitlines()[3].split()
    assert row[:2] == ["m", "29.00/0.9000*"] and row[3] == "n/a"
    assert "* Avg. over 2 of 3 sets, without Urban100 (no image measured)" in table
    avg = results_json(missing)["Avg."]
    assert (avg["sets"], avg["missing"], avg["psnr"]) == (["Set5", "Set14"], ["Urban100"], 29.0)

    partial = [_result("Set5", [30.0]), _result("Set14", [28.0, 26.0], skipped=1)]
    table = format_table("m", partial, "c")
    assert table.splitlines()[3].split() == ["m", "28.50/0.9000*", "30.00/0.9000", "27.00/0.9000*"]
    assert "* Avg. Set14 measured on part of the images (skips below)" in table
    assert average(partial).partial == ["Set14"] and not average(partial).complete


def test_cli_refuses_a_set_named_like_the_average_or_another_set(tmp_path: Path, capsys) -> None:
    for name in ("Avg.", "a/Set5", "b/Set5"):
        _save(tmp_path / name / "x.png", _rgb(16, 16, 1))
    assert main(["eval", "--scale", "2", "--data", str(tmp_path / "Avg.")]) == 2
    assert "has the name of the average's column" in capsys.readouterr().err
    assert main(["eval", "--scale", "2", "--data", str(tmp_path / "a/Set5"), str(tmp_path / "b/Set5")]) == 2
    assert "set 'Set5'" in capsys.readouterr().err
