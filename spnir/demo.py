"""``spnir demo``: the same small network trained twice on the embedded photographs, plain and with SPN.

The demo is a two-setting study (:mod:`spnir.study`): settings ``plain`` and ``spn``, one seed, the runs in
``OUT/plain`` and ``OUT/spn`` (each evaluated into its ``metrics.json``). Its own short report: ``report.md``
(comparison table with bicubic, per-image PSNR, settings, feature space), ``curves.png`` (validation PSNR
against iteration, both runs and bicubic) and ``comparison.png`` (LQ | plain | SPN | GT crops with PSNR).
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path
from typing import Any

import torch

from spnir.errors import SpnirError
from spnir.evaluation import (
    TASK_CONVENTIONS,
    Inference,
    dataset_samples,
    evaluate_images,
    model_restore,
)
from spnir.features import VGGFeatures
from spnir.metrics.suite import MetricSuite
from spnir.study import Setting, Study, collect, run_study
from spnir.study.report import comparison_figure, feature_space, plot_curves
from spnir.study.run import eval_datasets, evaluated_model
from spnir.weights.vgg import cached_vgg_path, resolve_feature_space

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
LABELS = {"plain": "plain", "spn": "SPN"}  # setting -> its name in the table and the figures


def choose_vgg_weights(requested: str | None) -> tuple[str, str]:
    """The VGG weights for the SPN run and a sentence saying which feature space that is: as requested, else
    torchvision's ImageNet VGG16 if cached (the method's file), else the Caffe one if cached, else random."""
    if requested is not None:
        space = resolve_feature_space("vgg16", requested)  # missing: say so now
        VGGFeatures("vgg16", ["relu1_1"], vgg_weights=requested)  # a damaged or foreign file: said before training
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


def demo_study(iterations: int, vgg_weights: str) -> Study:
    """The demo as a study: settings ``plain`` and ``spn`` (the SPN section as ``--set`` overrides), seed 0,
    evaluated on the config's validation images, the runs in ``OUT/plain`` and ``OUT/spn``."""
    config = copy.deepcopy(DEMO_CONFIG)
    config["train"]["total_iter"] = iterations
    config["val"]["every"] = max(1, iterations // 6)
    config["checkpoint"]["every"] = iterations
    spn = [f"spn.{key}={json.dumps(value)}" for key, value in {**DEMO_SPN, "vgg_weights": vgg_weights}.items()]
    return Study(name="demo", config=config, common=[], seeds=[int(config["seed"])],
                 settings=[Setting("plain", []), Setting("spn", ["name=demo_spn", *spn])], eval_sets=None,
                 compare={}, baselines=["plain"], source="spnir demo", layout="{setting}")


def free_demo_folder(base: str | Path) -> Path:
    """``base``, or ``base-2``, ``base-3``, ... : the first that holds no demo (a re-run keeps the old one)."""
    base = Path(base)
    candidates = (base if n == 1 else base.with_name(f"{base.name}-{n}") for n in range(1, 10_000))
    return next(c for c in candidates if not _holds_demo(c))


def _holds_demo(folder: Path) -> bool:
    return any((folder / name).exists() for name in ("report.md", *LABELS))


def run_demo(out_dir: str | Path = "runs/demo", iterations: int = 400, vgg_weights: str | None = None,
             overwrite: bool = False) -> Path:
    """Train and evaluate both runs, write the report, print the table; returns the report's path. A folder
    that holds a demo already is refused unless ``overwrite``."""
    if iterations < 2:
        raise SpnirError(f"iterations must be at least 2 (the demo validates twice per run); got {iterations}")
    out_dir = Path(out_dir)
    if _holds_demo(out_dir) and not overwrite:
        raise SpnirError(f"{out_dir} already holds a demo; choose another output folder, or overwrite it")
    weights, chosen = choose_vgg_weights(vgg_weights)
    print(f"spnir demo: feature space of the SPN run: {chosen}")
    study = demo_study(iterations, weights)
    seconds: dict[str, float] = {}
    for setting in study.settings:
        print(f"\n== training {LABELS[setting.name]} ({iterations} iterations) ==")
        start = time.monotonic()
        if not run_study(study, out_dir, only=[setting.name], log=lambda line: None, overwrite=overwrite):
            raise SpnirError(f"the {LABELS[setting.name]} run stopped early (interrupted); "
                             "run the demo again, overwriting it")
        seconds[setting.name] = time.monotonic() - start
    report = DemoReport(study, out_dir, seconds, chosen)
    path = report.write()
    print("\n" + report.table())
    print(f"\n{report.verdict()}\nreport: {path}\ncurves: {out_dir / 'curves.png'}\n"
          f"comparison: {out_dir / 'comparison.png'}")
    return path


class DemoReport:
    """The demo's short report from its finished study: the table with bicubic, the verdict, the figures."""

    def __init__(self, study: Study, out: Path, seconds: dict[str, float], chosen_space: str) -> None:
        self.study, self.out, self.seconds, self.chosen_space = study, out, seconds, chosen_space
        self.settings = {s.name: s for s in study.settings}
        self.config = study.run_config(self.settings["spn"], study.seeds[0])
        self.set_name, self.dataset = eval_datasets(study, self.config)[0]
        results = collect(study, out)
        self.scores = {s.name: results[s.name][study.seeds[0]]["sets"][self.set_name] for s in study.settings}
        self.bicubic = self._bicubic()

    def _bicubic(self) -> dict[str, list[float]]:
        """Bicubic upsampling of the validation LR images (per image): the first row of every SR table."""
        from spnir.imresize import imresize

        suite = MetricSuite(TASK_CONVENTIONS["sr"].settings(SCALE))
        measured = evaluate_images(lambda lq: imresize(lq, SCALE).clamp(0, 1), dataset_samples(self.dataset), suite,
                                   on_error="stop")
        return {m: [r.values[m] for r in measured.images] for m in suite.names}

    def final(self, setting: str, metric: str = "psnr") -> float:
        """The mean over the validation images of the run's final model (its ``metrics.json``)."""
        values = self.scores[setting][metric]
        return sum(values) / len(values)

    def best(self, setting: str) -> tuple[float, int]:
        """The best validation PSNR during training and its iteration."""
        from spnir.train.run_log import read_scalars

        curve = read_scalars(self.study.run_dir(self.out, setting, self.study.seeds[0]) / "scalars.csv")
        iteration, value = max(curve[f"val/{self.set_name}/psnr"], key=lambda point: point[1])
        return value, iteration

    def table(self) -> str:
        psnr, ssim = (sum(v) / len(v) for v in (self.bicubic["psnr"], self.bicubic["ssim"]))
        lines = [f"| run | {self.set_name} PSNR / SSIM (final) | best PSNR (iteration) | training time |",
                 "| --- | --- | --- | --- |",
                 f"| bicubic | {psnr:.3f} / {ssim:.4f} | | |"]
        for name, label in LABELS.items():
            best, at = self.best(name)
            lines.append(f"| {label} | {self.final(name):.3f} / {self.final(name, 'ssim'):.4f} | {best:.3f} ({at}) | "
                         f"{self.seconds[name]:.0f} s |")
        return "\n".join(lines)

    def verdict(self) -> str:
        delta = self.final("spn") - self.final("plain")
        if abs(delta) < 0.01:
            return f"In this short run SPN made no measurable difference ({delta:+.3f} dB)."
        word = "helped" if delta > 0 else "did not help"
        return (f"In this short run SPN {word}: {delta:+.3f} dB PSNR on the validation images "
                f"(one seed, a few hundred iterations: a smoke test of the method, not evidence either way).")

    @torch.no_grad()
    def plot_comparison(self, path: Path, crop: int = 96) -> list[str]:
        """LQ | plain | SPN | GT on a centre crop of each validation image, titled with the whole image's PSNR;
        returns the per-image PSNR lines."""
        from spnir.imresize import imresize

        seed = self.study.seeds[0]
        models = {s.name: model_restore(evaluated_model(self.study, s, seed, self.out), Inference(SCALE))
                  for s in self.study.settings}
        rows, lines = [], []
        for index, item in enumerate(self.dataset):
            lq, gt = item["lq"].unsqueeze(0), item["gt"].unsqueeze(0)
            h, w = gt.shape[-2:]
            top, left = max(0, (h - crop) // 2), max(0, (w - crop) // 2)
            window = (slice(None), slice(None), slice(top, top + crop), slice(left, left + crop))
            panels = [("LQ (bicubic up)", imresize(lq, SCALE).clamp(0, 1), self.bicubic["psnr"][index])]
            panels += [(LABELS[name], restore(lq), self.scores[name]["psnr"][index])
                       for name, restore in models.items()]
            rows.append([*((f"{label}\n{psnr:.2f} dB", image[window]) for label, image, psnr in panels),
                         ("GT", gt[window])])
            lines.append(f"image {index}: " + ", ".join(f"{label} {psnr:.2f} dB" for label, _, psnr in panels))
        comparison_figure(rows, path, dpi=100, title=f"centre crops; PSNR of the whole image (Y, border {SCALE})")
        return lines

    def write(self) -> Path:
        """``report.md`` with ``curves.png`` and ``comparison.png`` beside it; returns its path."""
        bicubic = sum(self.bicubic["psnr"]) / len(self.bicubic["psnr"])
        plot_curves(self.study, self.out, self.out / "curves.png", reference={self.set_name: ("bicubic", bicubic)})
        crops = self.plot_comparison(self.out / "comparison.png")
        config, model, train = self.config, self.config["model"], self.config["data"]["train"]
        spn = config["spn"]
        seed = self.study.seeds[0]
        parameters = sum(p.numel() for p in evaluated_model(self.study, self.settings["plain"], seed, self.out)
                         .parameters())
        text = f"""# spnir demo report

{self.verdict()}

{self.table()}

Per image (whole-image PSNR, Y channel, border {SCALE}):
{chr(10).join('- ' + line for line in crops)}

![validation PSNR](curves.png)

![crops](comparison.png)

## Settings
- Task: x{SCALE} super-resolution, LR made by MATLAB-compatible bicubic downscaling (rounded to 8 bit).
- Data: scikit-image's bundled photographs (`spnir.data.builtin`): train split for patches, val split for
  validation; nothing downloaded.
- Model: `{model['name']}` with {model['args']}, {parameters:,}
  parameters; both runs start from the same seed ({config['seed']}).
- Training: {config['train']['total_iter']} iterations, batch {train['batch_size']}, GT patch {train['patch_size']},
  Adam lr {config['optim']['lr']}, cosine schedule, L1 loss; validated and measured with the EMA model
  (decay {config['ema']['decay']}).
- SPN: weight {spn['weight']} (term at {spn['target_ratio']} of the L1 loss), layers {spn['layer_weights']}, \
periods {spn['periods']}, decays {spn['decays']},
  init_decay {spn['init_decay']}.
- Feature space of the SPN run: {feature_space(self.study, self.settings["spn"])}. ({self.chosen_space}.)
- Time (training and the final evaluation): plain {self.seconds['plain']:.0f} s, SPN {self.seconds['spn']:.0f} s on
  {torch.get_num_threads()} CPU threads.

Run folders (`plain/`, `spn/`) hold each run's `config.yml`, `scalars.csv`, `train.log`, final weights and
`metrics.json` (per-image PSNR/SSIM of the final model).
"""
        path = self.out / "report.md"
        path.write_text(text)
        return path
