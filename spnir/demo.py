"""``spnir demo``: the same small network trained twice on the embedded photographs, plain and with SPN.

Writes ``report.md`` (comparison table, settings, feature space), ``curves.png`` (validation PSNR against
iteration, both runs) and ``comparison.png`` (LQ | plain | SPN | GT crops with PSNR) into the output folder.
"""
from __future__ import annotations

import copy
import csv
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from spnir.errors import SpnirError
from spnir.metrics import MetricSettings
from spnir.vgg_weights import cached_vgg_path, resolve_feature_space

SCALE = 2

# The demo run: EDSR-baseline x2 shrunk to 32 features / 4 blocks, bicubic x2 on scikit-image's photographs.
DEMO_CONFIG: dict[str, Any] = {
    "name": "demo_plain",
    "task": "sr",
    "seed": 0,
    "model": {"name": "edsr-baseline", "scale": SCALE, "args": {"num_feat": 32, "num_block": 4}},
    "data": {
        "train": {"type": "builtin", "split": "train", "degradations": [{"type": "bicubic", "scale": SCALE}],
                  "patch_size": 48, "batch_size": 8, "enlarge": 16, "workers": 0},
        "val": [{"name": "builtin-val", "type": "builtin", "split": "val",
                 "degradations": [{"type": "bicubic", "scale": SCALE}]}],
    },
    "loss": {"type": "L1Loss"},
    "ema": {"decay": 0.99},
    "optim": {"type": "Adam", "lr": 1.0e-3, "betas": [0.9, 0.99]},
    "scheduler": {"type": "cosine", "eta_min": 1.0e-5},
    "train": {"total_iter": 400},
    "val": {"every": 50, "crop_border": SCALE, "y_channel": True},
    "checkpoint": {"every": 100, "keep": 1},
    "log": {"every": 25, "tensorboard": False},
}
# The term is kept at 5% of the L1 loss (weight "auto"): the authors' advice of 0.01-0.1, and the same relative
# push whether the features are ImageNet VGG16 or random; periods scaled to a run of a few hundred iterations.
DEMO_SPN: dict[str, Any] = {
    "enabled": True, "weight": "auto", "target_ratio": 0.05,
    "layer_weights": {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5},
    "periods": [25, 100], "decays": [0.1, 0.1], "init_decay": 0.1,
}


@dataclass
class DemoRun:
    label: str
    result: Any  # spnir.train.TrainResult
    seconds: float
    curve: list[tuple[int, float]]  # (iteration, validation PSNR)


def choose_vgg_weights(requested: str | None) -> tuple[str, str]:
    """The VGG weights for the SPN run and a sentence saying which feature space that is: as requested, else
    torchvision's ImageNet VGG16 if cached (the method's file), else the Caffe one if cached, else random."""
    if requested is not None:
        space = resolve_feature_space("vgg16", requested, ask_random="--vgg-weights random")  # missing: say so now
        return requested, f"{space.description}, as requested"
    for name, setting in (("vgg16", "imagenet"), ("vgg16-caffe", "imagenet-caffe")):
        if cached_vgg_path(name).is_file():
            space = resolve_feature_space("vgg16", setting)
            return setting, f"{space.description}, from {space.path}"
    return "random", (
        f"seeded random VGG16 weights: no ImageNet VGG16 in {cached_vgg_path('vgg16').parent} "
        "(place one with `spnir weights vgg16 --from FILE` or `spnir weights vgg16-caffe --from FILE`), so this "
        "demo measures distances in random conv features, not the method's feature space"
    )


def demo_configs(iterations: int, vgg_weights: str) -> dict[str, dict[str, Any]]:
    """The plain and SPN configs of the demo (identical but for the SPN section)."""
    plain = copy.deepcopy(DEMO_CONFIG)
    plain["train"]["total_iter"] = iterations
    plain["val"]["every"] = max(1, iterations // 6)
    plain["checkpoint"]["every"] = iterations
    spn = copy.deepcopy(plain)
    spn["name"] = "demo_spn"
    spn["spn"] = {**DEMO_SPN, "vgg_weights": vgg_weights}
    return {"plain": plain, "SPN": spn}


def free_demo_folder(base: str | Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that holds no demo (a re-run keeps the old one)."""
    base = Path(base)
    candidates = (base if n == 1 else base.with_name(f"{base.name}-{n}") for n in range(1, 10_000))
    return next(c for c in candidates if not _holds_demo(c))


def _holds_demo(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("report.md", "plain", "spn"))


def run_demo(out_dir: str | Path = "runs/demo", iterations: int = 400, vgg_weights: str | None = None,
             overwrite: bool = False) -> Path:
    """Train both runs, write the report, print the table; returns the report's path. A folder that holds a
    demo already is refused unless ``overwrite``."""
    from spnir.train import run_training

    if iterations < 2:
        raise SpnirError(f"--iterations must be at least 2; got {iterations}")
    out_dir = Path(out_dir)
    if _holds_demo(out_dir) and not overwrite:
        raise SpnirError(f"{out_dir} already holds a demo; give another --out, or --overwrite to replace it")
    weights, feature_space = choose_vgg_weights(vgg_weights)
    print(f"spnir demo: feature space of the SPN run: {feature_space}")
    runs = []
    for label, config in demo_configs(iterations, weights).items():
        run_dir = out_dir / label.lower()
        print(f"\n== training {label} ({iterations} iterations) ==")
        start = time.monotonic()
        result = run_training(config, run_dir, overwrite=overwrite)
        if not result.completed:
            raise SpnirError(f"the {label} run stopped early: {result.status}")
        runs.append(DemoRun(label, result, time.monotonic() - start, _psnr_curve(run_dir / "scalars.csv")))
    config = demo_configs(iterations, weights)["SPN"]
    bicubic = _bicubic_scores(config)
    _plot_curves(runs, bicubic, out_dir / "curves.png")
    crops = _plot_comparison(runs, config, out_dir / "comparison.png")
    report = _write_report(runs, bicubic, config, feature_space, crops, out_dir / "report.md")
    print("\n" + _table(runs, bicubic))
    print(f"\n{_verdict(runs)}\nreport: {report}\ncurves: {out_dir / 'curves.png'}\n"
          f"comparison: {out_dir / 'comparison.png'}")
    return report


def _psnr_curve(csv_path: Path) -> list[tuple[int, float]]:
    with open(csv_path, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["name"].startswith("val/") and r["name"].endswith("/psnr")]
    return [(int(r["iteration"]), float(r["value"])) for r in rows]


def _final(run: DemoRun) -> dict[str, float]:
    return next(iter(run.result.validation.values()))


def _validation_set(config: dict[str, Any]):
    from spnir.train.build import build_val_sets
    from spnir.train.config import load_config

    return build_val_sets(load_config(config))[0].dataset


def _bicubic_scores(config: dict[str, Any]) -> dict[str, float]:
    """Bicubic upsampling of the validation LR images: the first row of every SR table."""
    from spnir.imresize import imresize

    settings = MetricSettings(crop_border=SCALE, y_channel=True)
    psnrs, ssims = [], []
    for item in _validation_set(config):
        psnr, ssim = settings.measure(imresize(item["lq"].unsqueeze(0), SCALE).clamp(0, 1), item["gt"].unsqueeze(0))
        psnrs.append(float(psnr[0]))
        ssims.append(float(ssim[0]))
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


def _table(runs: list[DemoRun], bicubic: dict[str, float]) -> str:
    set_name = next(iter(runs[0].result.validation))
    lines = [f"| run | {set_name} PSNR / SSIM (final) | best PSNR (iteration) | training time |",
             "| --- | --- | --- | --- |",
             f"| bicubic | {bicubic['psnr']:.3f} / {bicubic['ssim']:.4f} | | |"]
    for run in runs:
        final = _final(run)
        best, at = run.result.best[set_name]["psnr"]
        lines.append(f"| {run.label} | {final['psnr']:.3f} / {final['ssim']:.4f} | {best:.3f} ({at}) | "
                     f"{run.seconds:.0f} s |")
    return "\n".join(lines)


def _verdict(runs: list[DemoRun]) -> str:
    plain, spn = (_final(r)["psnr"] for r in runs)
    delta = spn - plain
    if abs(delta) < 0.01:
        return f"In this short run SPN made no measurable difference ({delta:+.3f} dB)."
    word = "helped" if delta > 0 else "did not help"
    return (f"In this short run SPN {word}: {delta:+.3f} dB PSNR on the validation images "
            f"(one seed, a few hundred iterations: a smoke test of the method, not evidence either way).")


def _plot_curves(runs: list[DemoRun], bicubic: dict[str, float], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for run in runs:
        its, values = zip(*run.curve)
        ax.plot(its, values, marker="o", label=run.label)
    ax.axhline(bicubic["psnr"], color="gray", linestyle="--", label="bicubic")
    ax.set_xlabel("iteration")
    ax.set_ylabel("validation PSNR (dB, Y)")
    ax.set_title("spnir demo: small EDSR-baseline, x2, embedded photographs", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


@torch.no_grad()
def _plot_comparison(runs: list[DemoRun], config: dict[str, Any], path: Path, crop: int = 96) -> list[str]:
    """LQ | plain | SPN | GT on a centre crop of each validation image; returns the per-image PSNR lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spnir.imresize import imresize

    dataset = _validation_set(config)
    settings = MetricSettings(crop_border=SCALE, y_channel=True)
    models = [(r.label, (r.result.ema_model or r.result.model).eval()) for r in runs]
    fig, axes = plt.subplots(len(dataset), 4, figsize=(10, 2.6 * len(dataset)), dpi=100, squeeze=False)
    lines = []
    for row, index in enumerate(range(len(dataset))):
        item = dataset[index]
        lq, gt = item["lq"].unsqueeze(0), item["gt"].unsqueeze(0)
        outputs = {label: model(lq.to(next(model.parameters()).device)).cpu().clamp(0, 1) for label, model in models}
        panels = [("LQ (bicubic up)", imresize(lq, SCALE).clamp(0, 1))] + list(outputs.items()) + [("GT", gt)]
        h, w = gt.shape[-2:]
        top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
        scores = []
        for col, (label, image) in enumerate(panels):
            ax = axes[row][col]
            ax.imshow(image[0, :, top:top + crop, left:left + crop].permute(1, 2, 0).numpy())
            title = label
            if label != "GT":
                psnr = float(settings.measure(image, gt)[0][0])
                title += f"\n{psnr:.2f} dB"
                scores.append(f"{label} {psnr:.2f} dB")
            ax.set_title(title, fontsize=9)
            ax.axis("off")
        lines.append(f"image {index}: " + ", ".join(scores))
    fig.suptitle("centre crops; PSNR of the whole image (Y, border 2)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return lines


def _write_report(runs: list[DemoRun], bicubic: dict[str, float], config: dict[str, Any], feature_space: str,
                  crops: list[str], path: Path) -> Path:
    model = config["model"]
    train = config["data"]["train"]
    spn = config["spn"]
    text = f"""# spnir demo report

{_verdict(runs)}

{_table(runs, bicubic)}

Per image (whole-image PSNR, Y channel, border {SCALE}):
{chr(10).join('- ' + line for line in crops)}

![validation PSNR](curves.png)

![crops](comparison.png)

## Settings
- Task: x{SCALE} super-resolution, LR made by MATLAB-compatible bicubic downscaling (rounded to 8 bit).
- Data: scikit-image's bundled photographs (`spnir.data.builtin`): train split for patches, val split for
  validation; nothing downloaded.
- Model: `{model['name']}` with {model['args']}, {sum(p.numel() for p in runs[0].result.model.parameters()):,}
  parameters; both runs start from the same seed ({config['seed']}).
- Training: {config['train']['total_iter']} iterations, batch {train['batch_size']}, GT patch {train['patch_size']},
  Adam lr {config['optim']['lr']}, cosine schedule, L1 loss; validated with the EMA model (decay {config['ema']['decay']}).
- SPN: weight {spn['weight']} (term at {spn['target_ratio']} of the L1 loss), layers {spn['layer_weights']}, periods {spn['periods']}, decays {spn['decays']},
  init_decay {spn['init_decay']}.
- Feature space of the SPN run: {runs[1].result.feature_space}. ({feature_space}.)
- Time: plain {runs[0].seconds:.0f} s, SPN {runs[1].seconds:.0f} s on {torch.get_num_threads()} CPU threads.

Run folders (`plain/`, `spn/`) hold each run's `config.yml`, `scalars.csv`, `train.log` and final weights.
"""
    path.write_text(text)
    return path
