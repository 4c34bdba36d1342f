"""Validation switches: tiles through spnir restore's tiler (exact when a tile covers the image), bf16/fp16
inference, and the first N restored images of each set written to the run folder and TensorBoard."""
from __future__ import annotations

import pytest
import torch
from train_support import tiny_config

from spnir.imageio import load_image
from spnir.train import run_training
from spnir.train.build import build_parts
from spnir.train.config import load_config
from spnir.train.distributed import DistContext
from spnir.train.validation import Inference, Validator


def _validator(config: dict, inference: Inference) -> tuple[Validator, torch.nn.Module]:
    parts = build_parts(load_config(config), DistContext())
    v = parts.validator
    return Validator(v.sets, v.metrics, v.settings, v.device, inference), parts.model


def test_a_tile_covering_the_image_is_exact_and_smaller_tiles_blend(data):
    whole, model = _validator(tiny_config(), Inference(scale=2))
    covering, _ = _validator(tiny_config(), Inference(scale=2, tile=12, tile_overlap=4, save_images=1))
    small, _ = _validator(tiny_config(), Inference(scale=2, tile=8, tile_overlap=4, save_images=1))
    expected = whole.run(model, 1)
    assert covering.run(model, 1) == expected  # the LQ validation image is 12 x 12
    tiled = small.run(model, 1)
    assert tiled["v"]["psnr"] == pytest.approx(expected["v"]["psnr"], abs=0.5)
    lq = whole.sets[0].dataset[0]["lq"].unsqueeze(0)
    assert torch.equal(covering.images["v"][0], whole.restore(model, lq)[0])


@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_reduced_precision_inference_is_close_to_fp32(data, amp):
    fp32, model = _validator(tiny_config(), Inference(scale=2))
    low, _ = _validator(tiny_config(), Inference(scale=2, amp=amp))
    assert low.run(model, 1)["v"]["psnr"] == pytest.approx(fp32.run(model, 1)["v"]["psnr"], abs=0.3)


def test_save_images_writes_the_first_n_of_each_set(data, tmp_path):
    config = tiny_config(total=4, val={"every": 2, "save_images": 1, "tile": 8, "tile_overlap": 2,
                                       "amp": "bf16"}, log={"every": 2, "tensorboard": True, "progress": False})
    result = run_training(config, tmp_path / "run")
    assert result.completed
    for it in (2, 4):
        path = tmp_path / "run" / "images" / f"iter_{it:08d}" / "v" / "000.png"
        assert path.is_file() and load_image(path).data.shape == (3, 24, 24)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb"), size_guidance={"images": 0})
    events.Reload()
    assert [e.step for e in events.Images("val/v/000")] == [2, 4]
