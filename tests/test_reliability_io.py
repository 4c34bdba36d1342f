"""Export, restore, eval and image files when something is wrong: each case of ``docs/reliability.md``'s
sections on them, run through the command line as a user would (tiny models, small files)."""
from __future__ import annotations

import json
import os
import struct
import subprocess
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from spnir.archs import create_model, save_model_checkpoint
from spnir.cli import main


def _photo(path: Path, seed: int = 0, size: tuple[int, int] = (12, 10), gray: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    pixels = rng.integers(0, 256, size if gray else (*size, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path


def header_bomb(path: Path, side: int = 20000) -> Path:
    """A PNG of a few dozen bytes whose header claims ``side`` x ``side`` pixels."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(b"")) + chunk(b"IEND", b""))
    return path


def _run(capsys, *argv) -> tuple[int, str, str]:
    """``spnir ARGV`` in this process: exit code (argparse's refusals included), stdout, stderr."""
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:
        code = int(exc.code or 0)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.fixture
def sr_ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_model_checkpoint(create_model("edsr-baseline", 2, num_block=1, num_feat=4).eval(),
                                 tmp_path / "edsr.safetensors")


@pytest.fixture
def gray_ckpt(tmp_path) -> Path:
    torch.manual_seed(0)
    return save_model_checkpoint(create_model("dncnn", num_conv=3, num_feat=4).eval(), tmp_path / "dncnn.pt")


# -- images: header bombs, memory ------------------------------------------------------------------------
def test_a_header_bomb_is_skipped_by_restore_and_the_rest_restored(tmp_path, sr_ckpt, capsys):
    _photo(tmp_path / "in" / "a.png")
    bomb = header_bomb(tmp_path / "in" / "b.png")
    _photo(tmp_path / "in" / "c.png", 1)
    assert bomb.stat().st_size < 70
    code, out, err = _run(capsys, "restore", tmp_path / "in", "--checkpoint", sr_ckpt, "--out", tmp_path / "o",
                          "--quiet")
    assert code == 1
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == ["a.png", "c.png"]
    assert f"skipped {bomb}: refused: its header claims 400000000 pixels" in err
    assert "decompression-bomb" in out and "Traceback" not in err


def test_a_header_bomb_is_skipped_by_eval(tmp_path, capsys):
    _photo(tmp_path / "set" / "a.png", size=(16, 16))
    header_bomb(tmp_path / "set" / "b.png")
    code, out, err = _run(capsys, "eval", "--model", "bicubic", "--scale", "2", "--data", tmp_path / "set", "--quiet")
    assert code == 0  # the set is measured on a.png; b.png is listed as skipped
    assert "skipped set/b.png: " in err and "decompression-bomb" in out and "1 images measured, 1 skipped" in out


def test_a_restore_that_would_not_fit_says_so_and_names_a_tile_that_fits(tmp_path, sr_ckpt, capsys, monkeypatch):
    from spnir import restore
    from spnir.archs import model_from_checkpoint

    photo = _photo(tmp_path / "in" / "big.png", size=(96, 128))
    memory = restore.MemoryModel.measure(model_from_checkpoint(sr_ckpt))
    whole = restore.restore_bytes(memory, 96, 128, 2)
    monkeypatch.setattr(restore, "available_memory", lambda device: whole - 1)
    code, _, err = _run(capsys, "restore", photo, "--checkpoint", sr_ckpt, "--out", tmp_path / "o", "--quiet")
    assert code == 1 and not (tmp_path / "o" / "big.png").exists()
    assert "restoring 128x96 whole needs about" in err and "restore it in tiles: --tile 64" in err
    code, _, err = _run(capsys, "restore", photo, "--checkpoint", sr_ckpt, "--out", tmp_path / "o", "--quiet",
                        "--tile", "64", "--tile-overlap", "8")
    assert code == 0 and err == "" and (tmp_path / "o" / "big.png").is_file()


def test_an_allocation_failure_the_estimate_missed_is_a_skip(tmp_path, sr_ckpt, capsys, monkeypatch):
    import spnir.restore

    def no_memory(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:117] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(spnir.restore, "restore_image", no_memory)
    _photo(tmp_path / "in" / "a.png")
    code, _, err = _run(capsys, "restore", tmp_path / "in", "--checkpoint", sr_ckpt, "--out", tmp_path / "o", "--quiet")
    assert code == 1 and "a.png: out of memory ([enforce fail" in err and "--tile 256" in err
    assert len(err.splitlines()) == 1


def test_eval_refuses_an_image_that_would_not_fit(tmp_path, sr_ckpt, capsys, monkeypatch):
    from spnir import restore

    _photo(tmp_path / "set" / "big.png", size=(96, 128))
    monkeypatch.setattr(restore, "available_memory", lambda device: 1000)
    code, out, err = _run(capsys, "eval", "--checkpoint", sr_ckpt, "--data", tmp_path / "set", "--quiet")
    assert code == 1  # the one set measured nothing
    assert "whole needs about" in err and "measured nothing: set" in out


# -- restore: continuing, names, gray models -------------------------------------------------------------
def test_skip_existing_continues_an_interrupted_restore(tmp_path, sr_ckpt, capsys):
    for i, name in enumerate("abc"):
        _photo(tmp_path / "in" / f"{name}.png", i)
    out = tmp_path / "o"
    out.mkdir()
    (out / "a.png").write_bytes(b"finished before the interruption")
    from spnir.atomic import _temporary_prefix

    killed = out / (_temporary_prefix("b.png").replace(f"-{os.getpid()}-", "-999999999-") + "x1y2z3w4.tmp")
    killed.write_bytes(b"half a png")  # what a killed restore leaves: never named .png
    code, _, err = _run(capsys, "restore", tmp_path / "in", "--checkpoint", sr_ckpt, "--out", out, "--quiet")
    assert code == 2 and "--skip-existing" in err
    code, printed, _ = _run(capsys, "restore", tmp_path / "in", "--checkpoint", sr_ckpt, "--out", out, "--quiet",
                            "--skip-existing")
    assert code == 0 and "restored 2 image(s)" in printed and "kept 1 finished output(s)" in printed
    assert (out / "a.png").read_bytes() == b"finished before the interruption"
    assert not killed.exists() and sorted(p.name for p in out.iterdir()) == ["a.png", "b.png", "c.png"]
    assert Image.open(out / "c.png").size == (20, 24)
    code, _, err = _run(capsys, "restore", tmp_path / "in", "--checkpoint", sr_ckpt, "--out", out,
                        "--skip-existing", "--overwrite")
    assert code == 2 and "give one" in err


def test_a_gray_model_says_once_that_colour_photos_become_gray(tmp_path, gray_ckpt, capsys):
    _photo(tmp_path / "in" / "a.png", 0)
    _photo(tmp_path / "in" / "b.png", 1)
    _photo(tmp_path / "in" / "g.png", 2, gray=True)
    code, _, err = _run(capsys, "restore", tmp_path / "in", "--checkpoint", gray_ckpt, "--out", tmp_path / "o",
                        "--quiet")
    assert code == 0
    assert err.count("the model is grayscale") == 1 and "such as a.png" in err


# -- eval: messages and checks at parse time ------------------------------------------------------------
@pytest.mark.parametrize("argv, message", [
    (["--model", "bicubc", "--scale", "2"], "unknown method 'bicubc' (did you mean bicubic?); known: bicubic, "),
    (["--task", "denoise", "--sigma", "300"], "argument --sigma: 300 is out of range"),
    (["--scale", "2", "--noise-protocol", "8bit"], "--noise-protocol shape the noise --sigma S adds"),
])
def test_eval_argument_messages(tmp_path, capsys, argv, message):
    _photo(tmp_path / "set" / "a.png", size=(16, 16))
    code, _, err = _run(capsys, "eval", "--data", tmp_path / "set", *argv)
    assert code == 2 and message in err


def test_eval_reads_task_and_scale_from_a_safetensors_export(tmp_path, sr_ckpt, capsys):
    pytest.importorskip("safetensors")
    from spnir.archs import model_from_checkpoint
    from spnir.export import export_safetensors

    exported = export_safetensors(model_from_checkpoint(sr_ckpt), tmp_path / "x2.safetensors")
    _photo(tmp_path / "set" / "a.png", size=(16, 16))
    code, out, _ = _run(capsys, "eval", "--checkpoint", exported, "--data", tmp_path / "set", "--quiet")
    assert code == 0 and "edsr-baseline x2" in out


def test_eval_of_a_set_that_measured_nothing_fails_in_one_line(tmp_path, capsys):
    _photo(tmp_path / "good" / "a.png", size=(16, 16))
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.png").write_bytes(b"not an image")
    code, out, err = _run(capsys, "eval", "--model", "bicubic", "--scale", "2", "--data", tmp_path / "good",
                          tmp_path / "bad", "--quiet", "--json", tmp_path / "r.json")
    assert code == 1
    assert "1 of 2 set(s) measured nothing: bad (first reason:" in out
    assert len(err.splitlines()) == 1 and "skipped bad/x.png" in err  # the reason, once
    assert json.loads((tmp_path / "r.json").read_text())["Avg."]["missing"] == ["bad"]


def test_lpips_without_vgg_advises_the_command_line_option(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "no-cache"))
    _photo(tmp_path / "set" / "a.png", size=(16, 16))
    code, _, err = _run(capsys, "eval", "--model", "bicubic", "--scale", "2", "--data", tmp_path / "set",
                        "--metrics", "psnr,lpips", "--quiet")
    assert code == 2 and "--vgg-weights random" in err and "vgg_weights=" not in err


def test_demo_iterations_are_checked_while_parsing(capsys):
    code, _, err = _run(capsys, "demo", "--iterations", "1")
    assert code == 2 and "argument --iterations: 1 is not allowed; expected an integer >= 2" in err


# -- export ----------------------------------------------------------------------------------------------
onnx_needed = pytest.mark.skipif(
    any(__import__("importlib").util.find_spec(m) is None for m in ("onnx", "onnxscript", "onnxruntime")),
    reason="the export extra is not installed (pip install 'spnir[export]')")


@onnx_needed
@pytest.mark.parametrize("extra, message", [
    (["--opset", "7"], "--opset 7: the exporter writes opsets 18 to"),
    (["--opset", "99"], "--opset 99: the exporter writes opsets 18 to"),
    (["--size", "9000", "--dynamic"], "--size 9000: the traced input is 9000x13500, over the largest side 8192"),
])
def test_export_arguments_are_checked_before_any_work(tmp_path, sr_ckpt, capsys, monkeypatch, extra, message):
    from spnir.archs import model_files

    monkeypatch.setattr(model_files, "read_checkpoint", lambda *a: pytest.fail("read the checkpoint"))
    code, _, err = _run(capsys, "export", "--checkpoint", sr_ckpt, "--out", tmp_path / "m.onnx", *extra)
    assert code == 2 and message in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edsr.safetensors"]


@onnx_needed
def test_export_refuses_a_size_whose_verification_would_not_fit(tmp_path, sr_ckpt, capsys, monkeypatch):
    from spnir import restore

    monkeypatch.setattr(restore, "available_memory", lambda device: 10_000_000)
    code, _, err = _run(capsys, "export", "--checkpoint", sr_ckpt, "--out", tmp_path / "m.onnx", "--size", "2000")
    assert code == 2 and "--size: verifying the export at 2000x3000 needs about" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["edsr.safetensors"]  # no temporary file


def test_export_removes_what_a_killed_export_left(tmp_path, sr_ckpt, capsys):
    from spnir.atomic import _temporary_prefix

    killed = tmp_path / (_temporary_prefix("m.safetensors").replace(f"-{os.getpid()}-", "-999999999-") + "abcd1234.tmp")
    killed.write_bytes(b"half")
    code, _, _ = _run(capsys, "export", "--checkpoint", sr_ckpt, "--out", tmp_path / "m.safetensors", "--quiet")
    assert code == 0 and not killed.exists()


@onnx_needed
def test_export_reports_the_opset_the_file_holds(tmp_path, sr_ckpt, capsys):
    import onnx

    code, out, _ = _run(capsys, "export", "--checkpoint", sr_ckpt, "--out", tmp_path / "m.onnx", "--opset", "20",
                        "--quiet")
    assert code == 0 and "opset 20" in out
    assert [o.version for o in onnx.load(str(tmp_path / "m.onnx")).opset_import if o.domain == ""] == [20]


@pytest.fixture
def small_tmpfs(tmp_path):
    """A real 1 MiB file system (tests run as root); skipped where mounting is not allowed."""
    folder = tmp_path / "full"
    folder.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(folder)], check=False,
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({mounted.stderr.decode().strip() or 'not root'})")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=False)


def test_safetensors_export_on_a_full_disk_is_one_line(tmp_path, small_tmpfs, capsys):
    torch.manual_seed(0)
    big = save_model_checkpoint(create_model("edsr-baseline", 2).eval(), tmp_path / "edsr_full.pt")  # 5.5 MB
    out = small_tmpfs / "edsr.safetensors"
    code, _, err = _run(capsys, "export", "--checkpoint", big, "--out", out, "--quiet")
    assert code == 2
    assert err.strip() == f"spnir export: error: cannot write {out}: No space left on device"
    assert os.listdir(small_tmpfs) == []
