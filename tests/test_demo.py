"""`spnir demo` end to end on a few iterations: both runs, the report, the plots, the plain verdict."""
from __future__ import annotations

import json

from spnir.cli import main


def test_demo_writes_report_curves_and_comparison(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # no ImageNet VGG: random, said plainly
    out = tmp_path / "demo"
    assert main(["demo", "--iterations", "4", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "seeded random VGG16 weights" in printed and "not the method's feature space" in printed
    assert "| plain |" in printed and "| SPN |" in printed
    assert "In this short run SPN" in printed
    report = (out / "report.md").read_text()
    assert "vgg16 with seeded random weights" in report and "| SPN |" in report and "bicubic" in report
    for name in ("curves.png", "comparison.png", "plain/scalars.csv", "spn/model_final.pt", "spn/metrics.json"):
        assert (out / name).is_file(), name
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    # the demo is a study: each run measured once into metrics.json, which the table and the per-image lines show
    metrics = json.loads((out / "spn" / "metrics.json").read_text())["sets"]["builtin-val"]["psnr"]
    assert f"| SPN | {sum(metrics) / len(metrics):.3f} / " in printed
    assert f"SPN {metrics[0]:.2f} dB" in report.split("image 0:")[1].splitlines()[0]
    # a second demo into the same folder is refused, its work kept; --overwrite replaces it
    before = (out / "spn" / "model_final.pt").read_bytes()
    assert main(["demo", "--iterations", "4", "--out", str(out)]) == 2
    assert "already holds a demo" in capsys.readouterr().err
    assert (out / "spn" / "model_final.pt").read_bytes() == before
    measured = (out / "spn" / "metrics.json").stat().st_mtime_ns
    assert main(["demo", "--iterations", "4", "--out", str(out), "--overwrite"]) == 0
    assert (out / "spn" / "metrics.json").stat().st_mtime_ns != measured  # trained and measured again


def test_default_demo_folder_never_replaces_an_earlier_demo(tmp_path):
    from spnir.demo import free_demo_folder

    assert free_demo_folder(tmp_path / "demo") == tmp_path / "demo"
    (tmp_path / "demo").mkdir()
    (tmp_path / "demo" / "report.md").write_text("earlier")
    assert free_demo_folder(tmp_path / "demo") == tmp_path / "demo-2"
