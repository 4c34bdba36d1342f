"""Tiled / self-ensembled inference (spnir.restore) and the ``spnir restore`` command."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from spnir.archs import create_model
from spnir.archs.model_files import save_model_checkpoint
from spnir.cli import main
from spnir.errors import SpnirError
from spnir.imageio import read_image
from spnir.restore import blend_ramp, restore_image, tile_starts


class PixelwiseSR(nn.Module):
    """Each output pixel depends on one input pixel: tiling must reproduce it exactly."""

    def __init__(self, scale: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 3 * scale * scale, 1), nn.PixelShuffle(scale))

    def forward(self, x):
        return torch.sigmoid(self.body(x))


def tiny_swinir():
    return create_model("swinir-light", 2, depths=(2,), num_heads=(2,), embed_dim=8, img_size=16).eval()


def tiny_nafnet():
    return create_model("nafnet-width32", width=4, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1)).eval()


@pytest.mark.parametrize("factory,scale", [(tiny_swinir, 2), (tiny_nafnet, 1)])
def test_a_tile_covering_the_image_equals_whole_image_inference(factory, scale):
    model = factory()
    lq = torch.rand(3, 27, 35)
    whole = restore_image(model, lq, scale)
    assert whole.shape == (3, 27 * scale, 35 * scale)
    assert torch.equal(restore_image(model, lq, scale, tile=35, tile_overlap=8), whole)
    assert torch.equal(restore_image(model, lq, scale, tile=64), whole)


@pytest.mark.parametrize("tile,overlap", [(8, 0), (10, 3), (16, 7), (7, 6)])
def test_tiles_reassemble_exactly_for_a_pixelwise_model(tile, overlap):
    model = PixelwiseSR(3)
    lq = torch.rand(2, 3, 23, 30)
    whole = restore_image(model, lq, 3)
    tiled = restore_image(model, lq, 3, tile=tile, tile_overlap=overlap)
    torch.testing.assert_close(tiled, whole, rtol=0, atol=1e-6)


def test_tile_grid_and_blend_weights():
    assert tile_starts(30, 10, 3) == [0, 7, 14, 20]
    assert tile_starts(10, 10, 3) == [0] and tile_starts(5, 10, 3) == [0]
    for start, nxt in zip(tile_starts(100, 32, 8)[:-1], tile_starts(100, 32, 8)[1:]):
        assert nxt - start <= 32 - 8
    w = blend_ramp(10, 4, rise=True, fall=False)
    assert torch.all(w > 0) and torch.all(w[1:] >= w[:-1]) and w[4:].eq(1).all()
    assert blend_ramp(10, 4, rise=False, fall=False).eq(1).all()


def test_seams_blend_between_neighbouring_tiles():
    model = create_model("edsr-baseline", 2, num_block=1, num_feat=4).eval()
    lq = torch.rand(1, 3, 16, 40)
    whole = restore_image(model, lq, 2)
    hard = restore_image(model, lq, 2, tile=16, tile_overlap=0)
    blended = restore_image(model, lq, 2, tile=16, tile_overlap=8)
    seam = slice(28, 36)  # output columns around the first tile edge (input column 16)
    assert (blended - whole)[..., seam].abs().mean() < (hard - whole)[..., seam].abs().mean()


def test_self_ensemble_is_equivariant_to_flips_and_transposes():
    model = tiny_swinir()
    lq = torch.rand(3, 13, 19)
    out = restore_image(model, lq, 2, self_ensemble=True)
    plain = restore_image(model, lq, 2)
    assert not torch.allclose(out, plain)
    torch.testing.assert_close(restore_image(model, lq.flip(-1), 2, self_ensemble=True), out.flip(-1))
    torch.testing.assert_close(restore_image(model, lq.transpose(-2, -1), 2, self_ensemble=True),
                               out.transpose(-2, -1))
    tiled = restore_image(model, lq, 2, tile=32, tile_overlap=8, self_ensemble=True)
    torch.testing.assert_close(tiled, out)


def test_bad_arguments_are_named():
    model = PixelwiseSR(2)
    with pytest.raises(SpnirError, match="tile_overlap=16"):
        restore_image(model, torch.rand(3, 8, 8), 2, tile=16, tile_overlap=16)
    with pytest.raises(SpnirError, match="expected .* at scale 3"):
        restore_image(model, torch.rand(3, 8, 8), 3)
    with pytest.raises(SpnirError, match="shape"):
        restore_image(model, torch.rand(8, 8), 2)


def write_png(path, h, w, seed):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)


def test_cli_restores_files_and_folders_with_a_spnir_checkpoint(tmp_path, capsys):
    model = create_model("edsr-baseline", 2, num_block=1, num_feat=4).eval()
    ckpt = save_model_checkpoint(model, tmp_path / "edsr.pth")
    folder = tmp_path / "in"
    folder.mkdir()
    write_png(folder / "a.png", 12, 17, 0)
    write_png(folder / "b.png", 9, 8, 1)
    write_png(tmp_path / "c.png", 10, 11, 2)
    out = tmp_path / "out"
    code = main(["restore", str(folder), str(tmp_path / "c.png"), "--checkpoint", str(ckpt), "--out", str(out),
                 "--tile", "8", "--tile-overlap", "2", "--device", "cpu"])
    assert code == 0
    assert sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    restored = read_image(out / "a.png")
    assert restored.shape == (3, 24, 34)
    expected = restore_image(model, read_image(folder / "a.png"), 2, tile=8, tile_overlap=2)
    assert (restored - expected.clamp(0, 1)).abs().max() <= 0.5 / 255 + 1e-6


def test_cli_with_model_scale_and_overrides(tmp_path):
    model = create_model("nafnet-width32", width=4, enc_blk_nums=(1,), dec_blk_nums=(1,))
    weights = tmp_path / "naf.pth"
    torch.save({"params": model.state_dict()}, weights)
    write_png(tmp_path / "x.png", 11, 13, 3)
    code = main(["restore", str(tmp_path / "x.png"), "--model", "nafnet-width32", "--checkpoint", str(weights),
                 "--set", "width=4", "--set", "enc_blk_nums=[1]", "--set", "dec_blk_nums=[1]",
                 "--set", "local=true", "--self-ensemble", "--out", str(tmp_path / "o"), "--device", "cpu"])
    assert code == 0 and read_image(tmp_path / "o" / "x.png").shape == (3, 11, 13)


def test_cli_errors_are_clear(tmp_path, capsys):
    weights = tmp_path / "plain.pth"
    torch.save(create_model("edsr-baseline", 2, num_block=1, num_feat=4).state_dict(), weights)
    write_png(tmp_path / "x.png", 8, 8, 4)
    out = str(tmp_path / "o")
    assert main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(weights), "--out", out]) == 2
    assert "name its preset with --model" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(weights), "--out", out,
                 "--model", "edsr-baseline", "--scale", "2"]) == 2
    assert "does not fit preset 'edsr-baseline' x2" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "nope.png"), "--checkpoint", str(weights), "--out", out]) == 2
    assert "no such file or folder" in capsys.readouterr().err
    assert main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(weights), "--out", out,
                 "--set", "oops"]) == 2
    assert "KEY=VALUE" in capsys.readouterr().err


def test_cli_model_output_error_names_the_image(tmp_path, monkeypatch, capsys):
    import spnir.archs.model_files as model_files

    write_png(tmp_path / "x.png", 8, 6, 5)
    weights = tmp_path / "w.pth"
    weights.write_bytes(b"")
    # a x2 model believed to be x4: the tile runner's size check fails for this image
    monkeypatch.setattr(model_files, "model_for_inference", lambda *args, **kwargs: (PixelwiseSR(2), 4))
    assert main(["restore", str(tmp_path / "x.png"), "--checkpoint", str(weights), "--out", str(tmp_path / "o"),
                 "--device", "cpu", "--on-error", "stop"]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'x.png'}: model output is" in err and "expected (32, 24) at scale 4" in err
