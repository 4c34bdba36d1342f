"""``spnir restore`` never writes over its inputs or earlier outputs unasked, never re-encodes lossy unasked,
and skips (or stops at) a broken image."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from PIL import Image

from spnir.archs import create_model
from spnir.archs.model_files import save_model_checkpoint
from spnir.cli import main
from spnir.errors import SpnirError
from spnir.imageio import save_image


@pytest.fixture
def ckpt(tmp_path):
    model = create_model("edsr-baseline", 2, num_block=1, num_feat=4).eval()
    return str(save_model_checkpoint(model, tmp_path / "edsr.pth"))


def _photo(path, seed=0, size=(10, 12)):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(path, quality=90)
    return path


def _restore(*args):
    return main(["restore", *map(str, args), "--device", "cpu", "--quiet"])


@pytest.fixture
def no_model(monkeypatch):
    """Refusals happen before any model loads."""
    import spnir.archs.model_files as model_files

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the arguments were checked")

    monkeypatch.setattr(model_files, "model_for_inference", refuse)


def test_out_equal_to_an_input_folder_is_refused_before_any_work(tmp_path, ckpt, capsys, no_model):
    photos = tmp_path / "photos"
    original = _photo(photos / "a.png").read_bytes()
    assert _restore(photos, "--checkpoint", ckpt, "--out", photos) == 2
    err = capsys.readouterr().err
    assert f"--out {photos} is where the input {photos} lies" in err and "choose another --out" in err
    assert sorted(os.listdir(photos)) == ["a.png"] and (photos / "a.png").read_bytes() == original
    # the folder of an input file, spelled differently, and even with --overwrite
    assert _restore(photos / "a.png", "--checkpoint", ckpt, "--out", f"{photos}/../photos", "--overwrite") == 2
    assert "is where the input" in capsys.readouterr().err


def test_a_second_run_refuses_to_overwrite_unless_told(tmp_path, ckpt, capsys):
    _photo(tmp_path / "in" / "a.png", 0)
    _photo(tmp_path / "in" / "b.png", 1)
    out = tmp_path / "out"
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", out) == 0
    first = (out / "a.png").read_bytes()
    (out / "a.png").write_bytes(b"kept")
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", out) == 2
    assert f"{out / 'a.png'} already exists (and 1 more); use --skip-existing" in capsys.readouterr().err
    assert (out / "a.png").read_bytes() == b"kept"
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", out, "--overwrite") == 0
    assert (out / "a.png").read_bytes() == first


def test_an_output_linked_to_an_input_is_refused_even_with_overwrite(tmp_path, ckpt, capsys, no_model):
    src = _photo(tmp_path / "in" / "a.png")
    (tmp_path / "out").mkdir()
    os.symlink(src, tmp_path / "out" / "a.png")
    assert _restore(src, "--checkpoint", ckpt, "--out", tmp_path / "out", "--overwrite") == 2
    assert "is the input" in capsys.readouterr().err


def test_jpeg_inputs_become_png_by_default(tmp_path, ckpt):
    _photo(tmp_path / "in" / "photo.jpg")
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", tmp_path / "out") == 0
    assert os.listdir(tmp_path / "out") == ["photo.png"]
    with Image.open(tmp_path / "out" / "photo.png") as img:
        assert img.format == "PNG" and img.size == (24, 20)


def test_same_format_needs_a_quality_for_lossy_inputs(tmp_path, ckpt, capsys, monkeypatch):
    jpg = _photo(tmp_path / "in" / "photo.jpg")
    _photo(tmp_path / "in" / "drawing.png", 1)
    out = tmp_path / "out"
    import spnir.archs.model_files as model_files

    loaded = []
    real = model_files.model_for_inference
    monkeypatch.setattr(model_files, "model_for_inference", lambda *a, **k: loaded.append(1) or real(*a, **k))
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", out, "--format", "same") == 2
    assert f"{jpg} is JPEG: --format same would re-encode it lossy; give --quality N" in capsys.readouterr().err
    assert not loaded and not out.exists()
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", out, "--format", "same", "--quality", "97") == 0
    assert sorted(os.listdir(out)) == ["drawing.png", "photo.jpg"]
    with Image.open(out / "photo.jpg") as img, Image.open(out / "drawing.png") as png:
        assert img.format == "JPEG" and png.format == "PNG"


@pytest.mark.parametrize("extra,message", [
    (["--quality", "90"], "--quality sets JPEG/WebP quality with --format same"),
    (["--format", "same", "--quality", "0"], "--quality must be from 1 to 100; got 0"),
])
def test_quality_arguments_are_checked(tmp_path, ckpt, capsys, no_model, extra, message):
    _photo(tmp_path / "in" / "a.jpg")
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", tmp_path / "o", *extra) == 2
    assert message in capsys.readouterr().err


def test_two_inputs_writing_one_output_are_refused(tmp_path, ckpt, capsys, no_model):
    _photo(tmp_path / "in" / "a.jpg")
    _photo(tmp_path / "in" / "a.png")
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", tmp_path / "o") == 2
    inputs = sorted(str(tmp_path / "in" / name) for name in ("a.jpg", "a.png"))
    assert f"{inputs[1]} and {inputs[0]} would both be written as {tmp_path / 'o' / 'a.png'}" in capsys.readouterr().err


def test_a_broken_image_is_skipped_with_its_reason_or_stops_the_run(tmp_path, ckpt, capsys):
    _photo(tmp_path / "in" / "a.png", 0)
    (tmp_path / "in" / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    _photo(tmp_path / "in" / "c.png", 2)
    out = tmp_path / "out"
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", out) == 1
    captured = capsys.readouterr()
    assert sorted(os.listdir(out)) == ["a.png", "c.png"]
    assert "restored 2 image(s)" in captured.out and "skipped 1 image(s)" in captured.out
    assert f"{tmp_path / 'in' / 'b.png'}: cannot read image" in captured.out
    assert _restore(tmp_path / "in", "--checkpoint", ckpt, "--out", tmp_path / "out2", "--on-error", "stop") == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{tmp_path / 'in' / 'b.png'}: cannot read image" in err
    assert os.listdir(tmp_path / "out2") == ["a.png"]


def test_save_image_writes_lossy_formats_only_at_a_given_quality(tmp_path):
    with pytest.raises(SpnirError, match="JPEG is lossy; writing it needs a quality"):
        save_image(torch.rand(3, 8, 8), tmp_path / "x.jpg")
    assert not (tmp_path / "x.jpg").exists()
    save_image(torch.rand(3, 8, 8), tmp_path / "x.webp", quality=80)
    with Image.open(tmp_path / "x.webp") as img:
        assert img.format == "WEBP"
