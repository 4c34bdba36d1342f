"""Every file in configs/ validates (dataset paths stay unexpanded ${VAR}s until the datasets are built), each
paper row has a baseline and an SPN config that differ only in the SPN section and the name."""
from __future__ import annotations

from pathlib import Path

import pytest

from spnir.train.config import load_config, referenced_variables

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
FILES = sorted(CONFIGS.rglob("*.yml"))
ROWS = [f for f in FILES if not f.stem.endswith("_spn")]


def test_configs_exist_for_every_row_of_the_paper():
    stems = {f.stem for f in FILES}
    for row in ("sr/edsr_baseline_x2_div2k", "sr/edsr_baseline_x4_div2k", "sr/swinir_light_x4_div2k",
                "sr/swinir_x4_div2k", "dehaze/ffanet_its", "dehaze/ffanet_ots", "derain/idt_rain100l",
                "derain/idt_rain100h", "derain/idt_did", "derain/idt_ddn", "derain/idt_spa",
                "deblur/nafnet_width32_gopro",
                *(f"dehaze/dehazeformer_{s}_{d}" for s in "tsb" for d in ("its", "ots"))):
        name = row.split("/")[1]
        assert name in stems and f"{name}_spn" in stems, row


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(CONFIGS)) for f in FILES])
def test_config_validates(path, monkeypatch):
    for var in ("DIV2K_ROOT", "SR_BENCHMARK_ROOT", "RESIDE_ITS_ROOT", "SOTS_ROOT", "GOPRO_ROOT"):
        monkeypatch.delenv(var, raising=False)
    config = load_config(path)
    assert config["name"] == path.stem
    if path.parent.name != "demo":
        assert referenced_variables(config), "dataset paths are environment variables the user sets"


@pytest.mark.parametrize("path", ROWS, ids=[str(f.relative_to(CONFIGS)) for f in ROWS])
def test_spn_config_differs_from_its_baseline_only_in_spn(path):
    baseline = load_config(path)
    with_spn = load_config(path.with_name(f"{path.stem}_spn.yml"))
    assert not baseline["spn"]["enabled"] and with_spn["spn"]["enabled"]
    for key in baseline:
        if key not in ("spn", "name"):
            assert baseline[key] == with_spn[key], key


def test_base_inheritance_merges_sections_and_refuses_cycles(tmp_path):
    (tmp_path / "a.yml").write_text((CONFIGS / "demo" / "sr_x2_tiny.yml").read_text())
    (tmp_path / "b.yml").write_text("base: a.yml\noptim: {lr: 1.0e-3}\n")
    config = load_config(tmp_path / "b.yml")
    assert config["optim"]["lr"] == 1e-3 and config["optim"]["betas"] == [0.9, 0.99]
    assert config["model"]["name"] == "edsr-baseline"
    (tmp_path / "c.yml").write_text("base: d.yml\n")
    (tmp_path / "d.yml").write_text("base: c.yml\n")
    with pytest.raises(Exception, match="includes itself"):
        load_config(tmp_path / "c.yml")


def test_every_config_names_a_preset_that_builds_with_its_arguments():
    import torch

    from spnir.train.build import build_model

    combos = {}
    for path in FILES:
        model = load_config(path)["model"]
        combos[(model["name"], model["scale"], repr(model["args"]))] = model
    with torch.device("meta"):  # shapes only: no memory, no init cost
        for model in combos.values():
            assert sum(p.numel() for p in build_model(model).parameters()) > 0
