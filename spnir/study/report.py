"""A study's report: ``report.md`` (setup, mean ± std over seeds, paired differences to each baseline),
``curves.png`` (validation PSNR) and ``comparison.png`` (one crop, every setting), from the finished runs."""
from __future__ import annotations

import json
import os
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from spnir.atomic import atomic_path
from spnir.errors import SpnirError
from spnir.metrics.suite import METRICS
from spnir.study.run import collect, eval_datasets, evaluated_model, median_step_seconds, setting_config
from spnir.study.schema import Setting, Study
from spnir.study.stats import mean_std, paired_t_test


def _per_image_mean(runs: dict[int, dict[str, Any]], seeds: Sequence[int], set_name: str, metric: str) -> list[float]:
    """Per-image value averaged over ``seeds``."""
    rows = [runs[s]["sets"][set_name][metric] for s in seeds]
    return [sum(v) / len(v) for v in zip(*rows)]


def summary_tables(study: Study, results: dict[str, dict[int, dict[str, Any]]], baseline: str | None = None
                   ) -> tuple[list[str], list[str]]:
    """Markdown lines: (the mean/std table, the difference-to-``baseline`` table; default the first baseline)."""
    baseline = baseline or study.baseline
    sets = sorted({name for runs in results.values() for r in runs.values() for name in r["sets"]},
                  key=lambda n: [s for r in results.values() for x in r.values() for s in x["sets"]].index(n))
    measured = {m for runs in results.values() for r in runs.values() for values in r["sets"].values() for m in values}
    metrics = [m for m in METRICS if m in measured]  # psnr, ssim and what a study's metrics key added
    head = "| setting | seeds | " + " | ".join(f"{s} {m.upper()}" for s in sets for m in metrics) + " |"
    table = [head, "|" + "---|" * (2 + len(metrics) * len(sets))]
    for setting in study.settings:
        runs = results.get(setting.name, {})
        cells = []
        for s in sets:
            for metric in metrics:
                fmt = "{:.3f} ± {:.3f}" if metric == "psnr" else "{:.4f} ± {:.4f}"
                per_seed = [sum(r["sets"][s][metric]) / len(r["sets"][s][metric])
                            for r in runs.values() if metric in r["sets"].get(s, {})]
                cells.append(fmt.format(*mean_std(per_seed)) if per_seed else "–")
        table.append(f"| {setting.name} | {len(runs)} | " + " | ".join(cells) + " |")
    diff = ["| setting | set | paired seeds | images | ΔPSNR (dB) | t | p (images) | p (seeds) | ΔSSIM "
            "| p (SSIM, images) | better / worse images |",
            "|---|---|---|---|---|---|---|---|---|---|---|"]
    base = results.get(baseline, {})
    for setting in study.settings:
        if setting.name == baseline:
            continue
        runs = results.get(setting.name, {})
        seeds = [s for s in study.seeds if s in runs and s in base]
        if not seeds:
            continue
        groups = [(s, [s]) for s in sets] + ([("all sets", sets)] if len(sets) > 1 else [])
        for label, members in groups:
            a, b, a_ssim, b_ssim = [], [], [], []
            for s in members:
                a += _per_image_mean(runs, seeds, s, "psnr")
                b += _per_image_mean(base, seeds, s, "psnr")
                a_ssim += _per_image_mean(runs, seeds, s, "ssim")
                b_ssim += _per_image_mean(base, seeds, s, "ssim")
            d, t, p = paired_t_test(a, b)
            ds, _, ps = paired_t_test(a_ssim, b_ssim)
            per_seed = [[sum(r[k]["sets"][s]["psnr"][i] for s in members for i in range(len(r[k]["sets"][s]["psnr"])))
                         / len(a) for k in seeds] for r in (runs, base)]
            p_seeds = paired_t_test(*per_seed)[2]
            better = sum(x > y for x, y in zip(a, b))
            diff.append(f"| {setting.name} | {label} | {len(seeds)} | {len(a)} | {d:+.3f} | {t:.2f} | {p:.3g} | "
                        f"{p_seeds:.3g} | {ds:+.4f} | {ps:.3g} | {better} / {len(a) - better} |")
    return table, diff


def plot_curves(study: Study, out: Path, path: Path, reference: dict[str, tuple[str, float]] | None = None
                ) -> list[str]:
    """Validation PSNR against iteration (mean over the finished seeds) per setting and set, with a dashed line
    per set in ``reference`` (``{set: (label, PSNR)}``, e.g. bicubic); returns the set names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from spnir.train.run_log import read_scalars

    curves: dict[str, dict[str, list[list[tuple[int, float]]]]] = {}
    for setting in study.settings:
        for seed in study.seeds:
            csv_path = study.run_dir(out, setting.name, seed) / "scalars.csv"
            if not csv_path.is_file():
                continue
            for name, series in read_scalars(csv_path).items():
                if name.startswith("val/") and name.endswith("/psnr"):
                    curves.setdefault(name.split("/")[1], {}).setdefault(setting.name, []).append(series)
    if not curves:
        return []
    fig, axes = plt.subplots(1, len(curves), figsize=(5.5 * len(curves), 4), squeeze=False)
    for ax, (set_name, per_setting) in zip(axes[0], curves.items()):
        for index, (name, runs) in enumerate(per_setting.items()):
            length = min(len(r) for r in runs)
            its = [r[i][0] for i in range(length) for r in runs[:1]]
            values = [sum(r[i][1] for r in runs) / len(runs) for i in range(length)]
            ax.plot(its, values, marker="osd^vx"[index % 6], markersize=4, linestyle=("-", "--", "-.", ":")[index % 4],
                    label=f"{name} ({len(runs)} seed{'s' if len(runs) > 1 else ''})")
        if reference and set_name in reference:
            label, value = reference[set_name]
            ax.axhline(value, color="gray", linestyle="--", label=label)
        ax.set_title(f"{set_name}: validation PSNR (mean over seeds)")
        ax.set_xlabel("iteration")
        ax.set_ylabel("PSNR (dB)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return list(curves)


@torch.no_grad()
def plot_comparison(study: Study, out: Path, results: dict[str, dict[int, dict[str, Any]]], path: Path) -> str | None:
    """LQ (bicubic) | each setting (first finished seed) | GT on one crop, with the crop's PSNR (RGB)."""
    from spnir.imresize import imresize
    from spnir.metrics import psnr

    done = [s for s in study.settings if results.get(s.name)]
    if not done:
        return None
    first = done[0]
    seed = min(results[first.name])
    config = study.run_config(first, seed)
    datasets = dict(eval_datasets(study, config))
    set_name = study.compare.get("set", next(iter(datasets)))
    if set_name not in datasets:
        raise SpnirError(f"{study.source}: compare.set {set_name!r} is not an evaluation set ({list(datasets)})")
    item = datasets[set_name][int(study.compare.get("image", 0))]
    lq, gt = item["lq"].unsqueeze(0), item["gt"].unsqueeze(0)
    size = int(study.compare.get("size", 96))
    h, w = gt.shape[-2:]
    y, x = study.compare.get("at", [(h - size) // 2, (w - size) // 2])
    crop = (slice(None), slice(None), slice(y, y + size), slice(x, x + size))
    scale = gt.shape[-1] // lq.shape[-1]
    panels = [("LQ (bicubic)" if scale > 1 else "LQ", imresize(lq, scale).clamp(0, 1) if scale > 1 else lq.clamp(0, 1))]
    for setting in done:
        model = evaluated_model(study, setting, min(results[setting.name]), out)
        panels.append((setting.name, model(lq).float().clamp(0, 1)))
    row = [(f"{title}\n{float(psnr(img[crop], gt[crop])):.2f} dB", img[crop]) for title, img in panels]
    comparison_figure([[*row, ("GT", gt[crop])]], path, dpi=60)
    name = Path(str(item.get("gt_path", "image"))).name
    return f"{set_name} / {name}, crop {size}x{size} at (y={y}, x={x}); PSNR of the crop, all channels"


def comparison_figure(rows: Sequence[Sequence[tuple[str, torch.Tensor]]], path: Path, dpi: int,
                      title: str | None = None) -> None:
    """A grid of titled ``(1, C, h, w)`` crops, one row per image (RGB as it is, one channel in gray)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    columns = max(len(row) for row in rows)
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 2.6 * len(rows)), squeeze=False)
    for ax_row, row in zip(axes, rows):
        for ax, (label, image) in zip(ax_row, row):
            if image.shape[1] == 1:
                ax.imshow(image[0, 0].numpy(), cmap="gray", vmin=0, vmax=1)
            else:
                ax.imshow(image[0].permute(1, 2, 0).numpy())
            ax.set_title(label, fontsize=8)
    for ax in axes.flat:
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def machine() -> str:
    """CPU model, core count, OS and torch build of this machine (for the report)."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{model}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s) in the report process")


def speeds(study: Study, out: Path) -> dict[str, float]:
    """Mean training speed (it/s, as logged) of each setting over its runs."""
    from spnir.train.run_log import read_scalars

    result = {}
    for setting in study.settings:
        values = []
        for seed in study.seeds:
            path = study.run_dir(out, setting.name, seed) / "scalars.csv"
            if path.is_file():
                values += [v for _, v in read_scalars(path).get("it_per_s", [])]
        if values:
            result[setting.name] = sum(values) / len(values)
    return result


def _setting_row(study: Study, setting: Setting, out: Path, its: dict[str, float]) -> str:
    overrides = " ".join(f"`{o}`" for o in setting.overrides) or "(none)"
    if setting.evaluate_only:
        return f"| {setting.name} | evaluated as loaded, no training | 0 | – | – |"
    if setting.equal_compute:
        overrides += f" (compute of `{setting.equal_compute[0]}`)"
    folders = [study.run_dir(out, setting.name, k) for k in study.seeds]
    iterations = sorted({_total_iter(study, setting, k, out) for k, f in zip(study.seeds, folders)
                         if setting.equal_compute is None or (f / "compute.json").is_file()})
    steps = [median_step_seconds(f) for f in folders if (f / "scalars.csv").is_file() and _has_step_s(f)]
    step = f"{sum(steps) / len(steps):.3f}" if steps else "–"
    return (f"| {setting.name} | {overrides} | {', '.join(map(str, iterations)) or '–'} | "
            f"{f'{its[setting.name]:.2f}' if setting.name in its else '–'} | {step} |")


def _total_iter(study: Study, setting: Setting, seed: int, out: Path) -> int:
    return setting_config(study, setting, seed, out)["train"]["total_iter"]


def _has_step_s(folder: Path) -> bool:
    from spnir.train.run_log import read_scalars

    return bool(read_scalars(folder / "scalars.csv").get("step_s"))


def feature_space(study: Study, setting: Setting) -> str | None:
    """The SPN feature space of ``setting`` in words; None without a VGG-based negative term."""
    from spnir.weights.vgg import resolve_feature_space

    spn = study.run_config(setting, study.seeds[0])["spn"]
    if setting.evaluate_only or not spn["enabled"] or not isinstance(spn["features"], str):
        return None
    try:
        return resolve_feature_space(spn["features"], spn["vgg_weights"], seed=study.seeds[0]).description
    except SpnirError:  # the weights are gone since the runs: name the setting as it was given
        return f"{spn['features']} vgg_weights {spn['vgg_weights']}"


def feature_spaces(study: Study) -> list[str]:
    """The SPN feature space of each setting that has a VGG-based negative term, in words."""
    spaces = ((setting.name, feature_space(study, setting)) for setting in study.settings)
    return [f"`{name}`: {space}" for name, space in spaces if space is not None]


def negative_term_rows(study: Study, out: Path) -> list[str]:
    """A table row per SPN setting: the last logged negative term, L1 loss and their ratio, mean over seeds."""
    from spnir.train.run_log import read_scalars

    rows = []
    for setting in study.settings:
        shares, terms, pixels = [], [], []
        for seed in study.seeds:
            path = study.run_dir(out, setting.name, seed) / "scalars.csv"
            series = read_scalars(path) if path.is_file() else {}
            if series.get("spn/neg_term") and series.get("loss/pix"):
                term, pixel = series["spn/neg_term"][-1][1], series["loss/pix"][-1][1]
                shares.append(abs(term) / pixel)
                terms.append(term)
                pixels.append(pixel)
        if shares:
            term, pixel, share = (mean_std(values)[0] for values in (terms, pixels, shares))
            rows.append(f"| {setting.name} | {term:.3g} | {pixel:.4f} | {share:.3f} | {len(shares)} |")
    return rows


def _compute_lines(study: Study, out: Path) -> list[str]:
    lines = []
    for setting in study.settings:
        for seed in study.seeds:
            path = study.run_dir(out, setting.name, seed) / "compute.json"
            if path.is_file():
                c = json.loads(path.read_text())
                lines.append(f"- `{setting.name}` seed {seed}: {c['of']} step {c['of_step_s']:.3f} s / {c['base']} "
                             f"step {c['base_step_s']:.3f} s = {c['ratio']:.2f}; {c['of_iterations']} x "
                             f"{c['ratio']:.2f} -> {c['iterations']} iterations")
    return lines


def write_report(study: Study, out: str | Path, command: str = "", report_dir: str | Path | None = None) -> Path:
    """Write ``report.md``, ``curves.png``, ``comparison.png`` from the finished runs; returns the report path."""
    out = Path(out)
    folder = Path(report_dir) if report_dir is not None else out
    folder.mkdir(parents=True, exist_ok=True)
    results = collect(study, out)
    expected = len(study.settings) * len(study.seeds)
    finished = sum(len(r) for r in results.values())
    lines = [f"# Study {study.name}" + (" (PARTIAL)" if finished < expected else ""), ""]
    if finished < expected:
        lines += [f"**Partial:** {finished} of {expected} runs finished; the tables use what finished.", ""]
    lines += _setup_lines(study, out, results, command)
    table = summary_tables(study, results)[0] if results else []
    lines += ["", "## Results: mean ± std over seeds (per seed: mean over the set's images)", "", *table, ""]
    for baseline in study.baselines:
        diff = summary_tables(study, results, baseline)[1] if results else []
        lines += [f"## Difference to `{baseline}` (per image, averaged over the seeds both finished; "
                  "two-sided paired t-tests)", "",
                  "`p (images)` pairs the images (per-image PSNR averaged over seeds): it says whether the change is "
                  "consistent across images, not whether it exceeds the run-to-run noise of training. `p (seeds)` "
                  "pairs the seeds (set mean per seed); with 3 seeds it is weak. Compare ΔPSNR with the std over "
                  "seeds above.", "", *diff, ""]
    if plot_curves(study, out, folder / "curves.png"):
        lines += ["## Validation curves", "", "![curves](curves.png)", ""]
    caption = plot_comparison(study, out, results, folder / "comparison.png") if results else None
    if caption:
        lines += ["## Image comparison", "", f"{caption}.", "", "![comparison](comparison.png)", ""]
    missing = [f"{s.name}/seed{k}" for s in study.settings for k in study.seeds if k not in results.get(s.name, {})]
    if missing:
        lines += ["## Not finished", "", ", ".join(missing), ""]
    path = folder / "report.md"
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return path


def _setup_lines(study: Study, out: Path, results: dict[str, dict[int, dict[str, Any]]], command: str) -> list[str]:
    """The report's setup: study file and commands, machine, model and training, the settings table, the SPN
    feature spaces, the negative term's size and the equal-compute measurements."""
    config = study.run_config(study.settings[0], study.seeds[0])
    model, train = config["model"], config["data"]["train"]
    its = speeds(study, out)
    lines = ["## Setup", "",
             f"- Study file: `{study.source}`; runs: `spnir study -c {study.source} --out {out}`"
             + (f"; this report: `{command}`" if command else ""),
             f"- Machine: {machine()}",
             f"- Model: `{model['name']}`" + (f" x{model['scale']}" if model["scale"] else "")
             + f" {model['args'] or ''}" + (f" from `{model['pretrained']}`" if model["pretrained"] else "") + "; "
             f"{config['train']['total_iter']} iterations, batch {train['batch_size']}, "
             f"patch {train['patch_size']}, {config['optim']['type']} lr {config['optim']['lr']}, "
             f"{config['scheduler']['type']} schedule; evaluation EMA {config['ema']['decay']}",
             f"- Seeds: {study.seeds}; common overrides: {study.common or 'none'}",
             "- Metrics: " + (next(iter(next(iter(results.values())).values()))["metrics"] if results else "–"),
             "", "| setting | overrides | iterations | training speed (it/s) | train step (s, median) |",
             "|---|---|---|---|---|",
             *(_setting_row(study, s, out, its) for s in study.settings)]
    spaces = feature_spaces(study)
    if spaces:
        lines += ["", "SPN feature space: " + "; ".join(spaces) + "."]
    terms = negative_term_rows(study, out)
    if terms:
        lines += ["", "The negative term at the end of training (last logged values, batch means; mean over seeds):",
                  "", "| setting | negative term | L1 loss | \\|term\\| / L1 | seeds |", "|---|---|---|---|---|",
                  *terms]
    compute = _compute_lines(study, out)
    if compute:
        lines += ["", "Equal-compute runs (step times measured in the same seed's runs, this machine):", "", *compute]
    return lines
