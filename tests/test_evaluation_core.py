"""The one evaluation core (spnir.evaluation.evaluate_images) behind eval, validation, study and demo: the task
conventions table, ``spnir eval --tile``, and a study's ``metrics`` (LPIPS on random VGG16 weights here)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from perceptual_support import synthetic_lpips_state
from PIL import Image

from spnir.cli import main
from spnir.errors import SpnirError
from spnir.evaluation import (
    TASK_CONVENTIONS,
    Inference,
    Sample,
    dataset_samples,
    evaluate_images,
    model_restore,
)
from spnir.metrics import MetricSettings
from spnir.metrics.suite import MetricSuite
from spnir.study import load_study, run_study
from spnir.weights import perceptual as perceptual_weights


def _save(path: Path, seed: int, h: int = 24, w: int = 20) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
    return path


def test_task_conventions_give_each_tasks_metric_settings() -> None:
    assert TASK_CONVENTIONS["sr"].settings(4) == MetricSettings(crop_border=4, y_channel=True)
    assert TASK_CONVENTIONS["derain"].settings(1) == MetricSettings(crop_border=0, y_channel=True)
    for task in ("dehaze", "deblur", "denoise"):
        assert TASK_CONVENTIONS[task].settings(1, "matlab") == MetricSettings(0, False, "matlab")
    assert TASK_CONVENTIONS["sr"].settings(2, y_channel=False, crop_border=0) == MetricSettings(0, False)


def test_core_skips_a_bad_image_with_its_reason_and_keeps_outputs() -> None:
    gt = torch.rand(3, 16, 16, generator=torch.Generator().manual_seed(0))

    def unreadable() -> tuple[torch.Tensor, torch.Tensor, list[str]]:
        raise SpnirError("b.png: not an image")

    samples = [Sample("a.png", lambda: (gt, gt, [])), Sample("b.png", unreadable)]
    result = evaluate_images(lambda lq: lq, samples, MetricSuite(MetricSettings(0)), "S", keep=5)
    assert [r.name for r in result.images] == ["a.png"] and result.images[0].ssim == pytest.approx(1.0)
    assert [(s.name, s.reason) for s in result.skipped] == [("b.png", "b.png: not an image")]
    assert len(result.outputs) == 1 and torch.equal(result.outputs[0], gt)
    with pytest.raises(SpnirError, match="not an image"):
        evaluate_images(lambda lq: lq, samples, MetricSuite(MetricSettings(0)), "S", on_error="stop")


def _checkpoint(tmp_path: Path) -> Path:
    from spnir.archs import create_model
    from spnir.archs.model_files import save_model_checkpoint

    torch.manual_seed(0)
    return save_model_checkpoint(create_model("edsr-baseline", 2, num_feat=8, num_block=1), tmp_path / "e.pth")


def test_eval_tile_equals_whole_when_covering_and_matches_the_tiler(tmp_path: Path, capsys) -> None:
    from spnir.archs.model_files import model_for_inference

    ckpt = _checkpoint(tmp_path)
    _save(tmp_path / "HR" / "a.png", 1)  # LR 12x10

    def psnr(*extra: str) -> float:
        out = tmp_path / f"r{len(list(tmp_path.glob('r*.json')))}.json"
        assert main(["eval", "--checkpoint", str(ckpt), "--scale", "2", "--data", str(tmp_path / "HR"),
                     "--no-progress", "--device", "cpu", "--json", str(out), *extra]) == 0
        return json.loads(out.read_text())["HR"]["per_image"]["a.png"]["psnr"]

    whole = psnr()
    assert psnr("--tile", "12", "--tile-overlap", "4") == whole  # one tile covers the image
    tiled = psnr("--tile", "6", "--tile-overlap", "2")
    model = model_for_inference(ckpt, None, 2)[0].eval()
    gt = torch.from_numpy(np.array(Image.open(tmp_path / "HR" / "a.png"))).permute(2, 0, 1).float() / 255
    from spnir.evaluation import synthesize_lr

    lq, gt = synthesize_lr(gt, 2)
    suite = MetricSuite(TASK_CONVENTIONS["sr"].settings(2))
    restore = model_restore(model, Inference(scale=2, tile=6, tile_overlap=2))
    want = evaluate_images(restore, [Sample("a.png", lambda: (lq, gt, []))], suite).images[0].psnr
    assert tiled == pytest.approx(want, abs=1e-9) and tiled != whole

    capsys.readouterr()
    assert main(["eval", "--checkpoint", str(ckpt), "--scale", "2", "--data", str(tmp_path / "HR"),
                 "--tile", "8"]) == 2
    assert "--tile-overlap 32 must be smaller than --tile 8" in capsys.readouterr().err
    assert main(["eval", "--scale", "2", "--data", str(tmp_path / "HR"), "--tile", "8", "--tile-overlap", "2"]) == 2
    assert "--model bicubic resizes whole images" in capsys.readouterr().err


STUDY_CONFIG = {
    "task": "sr",
    "model": {"name": "edsr-baseline", "scale": 2, "args": {"num_feat": 4, "num_block": 1}},
    "data": {"train": {"type": "builtin", "degradations": [{"type": "bicubic", "scale": 2}], "patch_size": 16,
                       "batch_size": 2, "workers": 0},
             "val": [{"name": "tiny", "type": "builtin", "split": "val", "max_images": 1,
                      "degradations": [{"type": "bicubic", "scale": 2}]}]},
    "optim": {"lr": 1e-3},
    "train": {"total_iter": 4, "device": "cpu"},
    "val": {"crop_border": 2, "y_channel": True},
    "log": {"progress": False, "tensorboard": False},
}


def _study(tmp_path: Path, **extra) -> Path:
    (tmp_path / "train.yml").write_text(yaml.safe_dump(STUDY_CONFIG))
    _save(tmp_path / "HR" / "a.png", 2, 32, 28)
    small = {"name": "tiny", "type": "clean", "gt": str(tmp_path / "HR"), "degradations": [{"type": "bicubic",
                                                                                              "scale": 2}]}
    study = {"name": "m", "config": "train.yml", "seeds": [0], "set": ["val.vgg_weights=random"], "eval": [small],
             "settings": [{"name": "untrained", "evaluate_only": True}], **extra}
    path = tmp_path / "study.yml"
    path.write_text(yaml.safe_dump(study))
    return path


def test_study_metrics_key_adds_lpips_to_metrics_json(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(SpnirError, match=r"study.yml: metrics names lpips .*lpips-vgg learned weights not found"):
        load_study(_study(tmp_path, metrics=["psnr", "ssim", "lpips"]))
    with pytest.raises(SpnirError, match=r"study.yml: metrics = \['psnr', 'niqe'\]: expected distinct names"):
        load_study(_study(tmp_path, metrics=["psnr", "niqe"]))
    learned = perceptual_weights.cached_learned_path("lpips-vgg")
    learned.parent.mkdir(parents=True)
    torch.save(synthetic_lpips_state(0), learned)

    study = load_study(_study(tmp_path, metrics=["psnr", "ssim", "lpips"]))
    assert run_study(study, tmp_path / "out", log=lambda line: None)
    result = json.loads((tmp_path / "out/runs/untrained/seed0/metrics.json").read_text())
    assert list(result["sets"]["tiny"]) == ["images", "psnr", "ssim", "lpips"]
    assert "LPIPS: lower is better" in result["metrics"]
    from spnir.study import collect
    from spnir.study.report import summary_tables

    table = summary_tables(study, collect(study, tmp_path / "out"))[0]
    assert table[0] == "| setting | seeds | tiny PSNR | tiny SSIM | tiny LPIPS |"
    assert table[2].endswith(f"| {result['sets']['tiny']['lpips'][0]:.4f} ± 0.0000 |")

    from spnir.study.run import eval_datasets, evaluate_run, evaluated_model

    config = study.run_config(study.settings[0], 0)
    model = evaluated_model(study, study.settings[0], 0, tmp_path / "out")
    again = evaluate_run(study, config, tmp_path / "again", model)["sets"]["tiny"]
    suite = MetricSuite.build(["psnr", "ssim", "lpips"], TASK_CONVENTIONS["sr"].settings(2), "random")
    dataset = eval_datasets(study, config)[0][1]
    direct = evaluate_images(model_restore(model, Inference(scale=2)), dataset_samples(dataset), suite).images
    assert again["lpips"] == [r.values["lpips"] for r in direct] and again["psnr"] == [r.psnr for r in direct]
    assert 0 < again["lpips"][0] < 1
    assert load_study(_study(tmp_path)).metrics == ["psnr", "ssim"]  # without the key: metrics.json as before
