"""``spnir export``: every preset to ONNX with dynamic sizes (checked in onnxruntime), safetensors with metadata,
and the command's refusals. Models are the presets' architectures at a small width and depth."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from torch import nn

from spnir.archs import create_model, list_models
from spnir.archs.idt import patch_indices, patch_starts
from spnir.archs.model_files import model_for_inference, save_model_checkpoint
from spnir.archs.registry import get_preset
from spnir.cli import main
from spnir.errors import SpnirError

onnxruntime = pytest.importorskip("onnxruntime",
                                  reason="the export extra is not installed (pip install 'spnir[export]')")

from spnir.export import (  # noqa: E402
    TOLERANCE,
    export_onnx,
    export_safetensors,
    metadata_of,
    min_size,
)

TINY = {
    "dehazeformer-t": dict(depths=(1, 1, 1, 1, 1), embed_dims=(8, 16, 24, 16, 8)),
    "dehazeformer-s": dict(depths=(1, 1, 1, 1, 1), embed_dims=(8, 16, 24, 16, 8)),
    "dehazeformer-b": dict(depths=(1, 1, 1, 1, 1), embed_dims=(8, 16, 24, 16, 8)),
    "dncnn": dict(num_conv=3, num_feat=8),
    "edsr": dict(num_block=1, num_feat=8),
    "edsr-baseline": dict(num_block=1, num_feat=8),
    "ffanet": dict(groups=1, blocks=1, dim=16),
    "idt": dict(img_size=64, embed_dim=8, depths=(1,) * 9, num_heads=(1, 1, 2, 2, 4, 4, 2, 1, 1)),
    "imdn": dict(num_feat=16, num_modules=1),
    "nafnet-width32": dict(width=4, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1)),
    "nafnet-width64": dict(width=4, enc_blk_nums=(1, 1), dec_blk_nums=(1, 1)),
    "swinir": dict(depths=(2,), num_heads=(2,), embed_dim=8, img_size=16),
    "swinir-light": dict(depths=(2,), num_heads=(2,), embed_dim=8, img_size=16),
}


def tiny(name: str, **extra) -> nn.Module:
    preset = get_preset(name)
    torch.manual_seed(0)
    model = create_model(name, preset.scales[-1] if preset.scales else None, **{**TINY[name], **extra}).eval()
    with torch.no_grad():  # away from the initialisation (NAFNet's blocks start as identities)
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return model


def test_every_preset_is_covered():
    assert set(TINY) == set(list_models())


@pytest.mark.parametrize("name", sorted(TINY))
def test_dynamic_onnx_follows_the_input_size(name, tmp_path):
    model = tiny(name)
    path = tmp_path / f"{name}.onnx"
    checks = export_onnx(model, path, dynamic=True, size=max(32, getattr(model, "export_min_size", 0)))
    low = min_size(model)
    sides = {side for c in checks for side in (c.height, c.width)}
    assert {low, low + 1, 2 * low + 1, 3 * low + 5} <= sides and any(side % 2 for side in sides)
    assert len({(c.height, c.width) for c in checks}) == len(checks) == 7
    assert all(c.max_diff <= TOLERANCE["fp32"] for c in checks), checks
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    below = np.zeros((1, 1 if name == "dncnn" else 3, low - 1, low + 2), np.float32)
    with pytest.raises(Exception, match=f"spnir: input height and width must be at least {low} px"):
        session.run(None, {"input": below})  # refused in the graph, not a wrong image
    meta = metadata_of(path)
    preset = get_preset(name)
    assert meta["preset"] == name and meta["task"] == preset.task
    assert meta["scale"] == str(preset.scales[-1] if preset.scales else 1)
    assert json.loads(meta["overrides"]) == json.loads(json.dumps(TINY[name]))


def test_idt_batched_split_equals_the_loop():
    for length in (64, 65, 108, 109, 200, 555):
        assert patch_indices(length, 64, 20)[:, 0].tolist() == patch_starts(length, 64, 20)
    model = tiny("idt")
    for size in ((64, 64), (64, 150), (101, 77)):
        x = torch.rand(1, 3, *size)
        with torch.no_grad():
            torch.testing.assert_close(model.forward_tiles_batched(x), model(x), atol=1e-5, rtol=0)


def test_nafnet_local_pool_export_path_equals_eager():
    model = tiny("nafnet-width32", local=True, train_size=16)
    pool = next(m for m in model.modules() if type(m).__name__ == "LocalAvgPool2d")
    for size in ((8, 8), (20, 30), (33, 17), (64, 64)):  # window 24: global, partly and fully local
        x = torch.rand(2, 4, *size)
        expected = pool(x).expand(2, 4, *size)  # a global average comes as 1x1, broadcast where it is used
        torch.testing.assert_close(pool.integral_average(x), expected, atol=1e-5, rtol=0)


def test_nafnet_local_exports_across_its_window(tmp_path):
    model = tiny("nafnet-width32", local=True, train_size=16)  # window 24 px; checks at 32x48 and larger
    checks = export_onnx(model, tmp_path / "local.onnx", dynamic=True, size=32)
    assert max(c.max_diff for c in checks) <= TOLERANCE["fp32"]


class SizeBranching(nn.Module):
    """Doubles small images only: a branch on the size that a trace fixes."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1)
        self.spnir_preset = {"name": "ffanet", "scale": None, "overrides": {}}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) * 2 if x.shape[-1] < 80 else self.conv(x)


def test_a_graph_fixed_to_some_sizes_is_refused_and_not_written(tmp_path):
    path = tmp_path / "branch.onnx"
    with pytest.raises(SpnirError, match="branches on the input size|differs from PyTorch|cannot run"):
        export_onnx(SizeBranching(), path, dynamic=True, size=32)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("dynamic", [False, True])
def test_a_traced_size_over_the_largest_side_is_refused_by_one_rule(tmp_path, dynamic):
    path = tmp_path / "big.onnx"
    with pytest.raises(SpnirError, match="^size=9000: the traced input is 9000x13500, over the largest side 8192"):
        export_onnx(create_model("edsr-baseline", 2, **TINY["edsr-baseline"]), path, dynamic=dynamic, size=9000)
    assert list(tmp_path.iterdir()) == []


def test_fixed_size_export_and_fp16(tmp_path):
    import onnx

    model = tiny("dncnn")
    checks = export_onnx(model, tmp_path / "fixed.onnx", size=40)
    assert [(c.height, c.width) for c in checks] == [(40, 60)]
    dims = onnx.load(str(tmp_path / "fixed.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 1, 40, 60]
    half = export_onnx(model, tmp_path / "half.onnx", dynamic=True, size=32, half=True)
    assert all(c.max_diff <= TOLERANCE["fp16"] for c in half)
    assert onnx.load(str(tmp_path / "half.onnx")).graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.FLOAT16


def test_safetensors_export_loads_back_with_its_metadata(tmp_path):
    model = tiny("imdn")
    path = export_safetensors(model, tmp_path / "imdn.safetensors")
    meta = metadata_of(path)
    assert (meta["preset"], meta["scale"], meta["task"], meta["architecture"]) == ("imdn", "4", "sr", "imdn")
    assert meta["version"]
    loaded, scale = model_for_inference(path)
    assert scale == 4
    x = torch.rand(1, 3, 12, 10)
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def _loading_back_changes_a_tensor(monkeypatch):
    """The safetensors export's own check (loading the file back as a checkpoint) sees a changed weight."""
    import spnir.export

    real = spnir.export.model_for_inference

    def changed(path):
        model, scale = real(path)
        with torch.no_grad():
            next(model.parameters()).add_(1)
        return model, scale

    monkeypatch.setattr(spnir.export, "model_for_inference", changed)


def test_safetensors_export_removes_a_file_that_loads_back_changed(tmp_path, monkeypatch):
    _loading_back_changes_a_tensor(monkeypatch)
    with pytest.raises(SpnirError, match="removed: loading it back changed 1 tensors"):
        export_safetensors(tiny("dncnn"), tmp_path / "dncnn.safetensors")
    assert list(tmp_path.iterdir()) == []


@pytest.fixture()
def checkpoint(tmp_path):
    return save_model_checkpoint(tiny("edsr-baseline"), tmp_path / "model.pt")


def test_cli_onnx_prints_the_differences(checkpoint, tmp_path, capsys):
    out = tmp_path / "edsr.onnx"
    assert main(["export", "--quiet", "--checkpoint", str(checkpoint), "--out", str(out), "--dynamic",
                 "--size", "24"]) == 0
    printed = capsys.readouterr().out
    assert "wrote" in printed and "24x36" in printed and "onnxruntime vs PyTorch" in printed
    assert metadata_of(out)["preset"] == "edsr-baseline"


def test_cli_safetensors_half(checkpoint, tmp_path, capsys):
    out = tmp_path / "edsr.safetensors"
    assert main(["export", "--quiet", "--checkpoint", str(checkpoint), "--out", str(out), "--half"]) == 0
    assert "spnir.task=sr" in capsys.readouterr().out
    model, _ = model_for_inference(out)
    assert model.conv_first.weight.dtype == torch.float32  # fp16 on disk, the model's dtype when loaded


def test_cli_safetensors_whose_file_loads_back_changed_is_refused(checkpoint, tmp_path, monkeypatch, capsys):
    _loading_back_changes_a_tensor(monkeypatch)
    out = tmp_path / "edsr.safetensors"
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "removed: loading it back changed 1 tensors" in capsys.readouterr().err
    assert not out.exists()


def test_cli_never_replaces_a_file_without_overwrite(checkpoint, tmp_path, capsys):
    out = tmp_path / "edsr.safetensors"
    out.write_bytes(b"the user's file")
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(out)]) == 2
    assert "already exists; use --overwrite" in capsys.readouterr().err
    assert out.read_bytes() == b"the user's file"
    assert main(["export", "--quiet", "--checkpoint", str(checkpoint), "--out", str(out), "--overwrite"]) == 0
    assert metadata_of(out)["preset"] == "edsr-baseline"


@pytest.mark.parametrize("extra, message", [
    (["--out", "{dir}/other.pt", "--format", "safetensors"], "name it .onnx or .safetensors"),
    (["--out", "{dir}/model.bin"], "name it .onnx or .safetensors"),
    (["--out", "{dir}/x.safetensors", "--dynamic"], "--dynamic: ONNX options"),
    (["--out", "{dir}/x.onnx", "--format", "safetensors"], "ends in .onnx but --format is safetensors"),
])
def test_cli_refuses_before_loading(checkpoint, tmp_path, capsys, extra, message):
    args = [a.format(dir=tmp_path) for a in extra]
    assert main(["export", "--checkpoint", str(checkpoint), *args]) == 2
    assert message in capsys.readouterr().err


def test_cli_refuses_to_replace_the_checkpoint(tmp_path, capsys):
    path = export_safetensors(tiny("dncnn"), tmp_path / "dncnn.safetensors")
    before = path.read_bytes()
    assert main(["export", "--checkpoint", str(path), "--out", str(path), "--overwrite"]) == 2
    assert "is the checkpoint itself" in capsys.readouterr().err
    assert path.read_bytes() == before


def test_missing_export_packages_name_the_extra(checkpoint, tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "onnxruntime" else real(name, *a))
    assert main(["export", "--checkpoint", str(checkpoint), "--out", str(tmp_path / "m.onnx")]) == 2
    assert "pip install 'spnir[export]'" in capsys.readouterr().err
