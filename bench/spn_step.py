"""SPN step cost: plain L1 step vs the official recipe (bench/reference_spn.py) vs spnir's SPN object.

    .venv/bin/python bench/spn_step.py [--configs edsr-baseline,...] [--negatives 1,2,4] [--reps 5] [--quick]

In one process, interleaved, medians over repeated steps. Before timing, each configuration checks that the
reference and spnir steps give the same loss on the same batch and weights (to 1e-5), so speed is never
bought with different maths. VGG weights are seeded random (timing does not depend on their values).
"""
from __future__ import annotations

import argparse
import copy
import platform
import statistics
import tempfile
import time
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from reference_spn import BasicSRStyleVGG, ReferenceSPNStep, loop_ema
from spnir import SPN, VGGFeatures
from spnir.archs import create_model
from spnir.ema import ModelEMA
from spnir.losses import L1Loss
from spnir.train.checkpoint import CheckpointDir
from spnir.train.distributed import DistContext
from spnir.train.logging import RunLogger
from spnir.train.trainer import Schedule, Trainer, TrainParts

LAYER_WEIGHTS = {"relu1_2": 0.2, "relu2_2": 0.3, "relu3_3": 0.5}
PERIODS = (100, 200, 500, 1000)


@dataclass
class Config:
    preset: str
    scale: int | None
    batch: int
    patch: int  # LQ patch size


CONFIGS = {
    "edsr-baseline": Config("edsr-baseline", 4, 16, 48),
    "swinir-light": Config("swinir-light", 4, 16, 64),
    "ffanet": Config("ffanet", None, 4, 128),
    "nafnet-width32": Config("nafnet-width32", None, 4, 256),
}


def build(cfg: Config) -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model(cfg.preset, scale=cfg.scale)


def perturbed_copies(model: torch.nn.Module, count: int) -> list[torch.nn.Module]:
    """Negatives that differ from the model, so the distance (and its gradient) is not zero."""
    copies = []
    for k in range(count):
        neg = copy.deepcopy(model)
        with torch.no_grad():
            g = torch.Generator().manual_seed(100 + k)
            for p in neg.parameters():
                p.add_(0.01 * torch.randn(p.shape, generator=g))
        copies.append(neg.eval().requires_grad_(False))
    return copies


class PlainStep:
    def __init__(self, model):
        self.model, self.opt = model, torch.optim.Adam(model.parameters(), lr=1e-4)

    def __call__(self, lq, gt):
        self.opt.zero_grad()
        loss = F.l1_loss(self.model(lq), gt)
        loss.backward()
        self.opt.step()
        return float(loss)


class SpnirStep:
    """The drop-in loop of the README with spnir's SPN and ModelEMA."""

    def __init__(self, model, negatives, vgg, periods, decays, feature_dtype=None):
        self.model, self.opt = model, torch.optim.Adam(model.parameters(), lr=1e-4)
        self.spn = SPN(model, weight=1.0, layer_weights=LAYER_WEIGHTS, features=vgg,
                       periods=periods, decays=decays, feature_dtype=feature_dtype)
        for mine, given in zip(self.spn.negatives.models, negatives):
            mine.load_state_dict(given.state_dict())
        self.ema = ModelEMA(model, 0.999)

    def __call__(self, lq, gt):
        self.opt.zero_grad()
        out = self.model(lq)
        loss = F.l1_loss(out, gt) + self.spn(lq, out)
        loss.backward()
        self.opt.step()
        self.ema.update()
        self.spn.step()
        return float(loss)


class TrainerStep:
    """One iteration of ``spnir train``'s loop (Trainer.train_step) with the same model and SPN."""

    def __init__(self, spnir_step: SpnirStep, folder: str):
        model = spnir_step.model
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
        parts = TrainParts(
            model=model, forward=model, loss_fn=L1Loss(), optimizer=optimizer,
            scheduler=torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), batches=None,
            total_iter=10**9, spn=spnir_step.spn, ema=ModelEMA(model, 0.999))
        self.model = model
        self.trainer = Trainer(parts, DistContext(), CheckpointDir(folder), RunLogger(None, 10**9), Schedule())

    def __call__(self, lq, gt):
        values, _, _ = self.trainer.train_step({"lq": lq, "gt": gt})
        return sum(values.values())


def make_steps(cfg: Config, n_neg: int, vgg: VGGFeatures):
    base = build(cfg)
    negatives = perturbed_copies(base, n_neg)
    periods, decays = PERIODS[:n_neg], (0.999,) * n_neg
    ref_model = copy.deepcopy(base)
    reference = ReferenceSPNStep(
        ref_model, [copy.deepcopy(n) for n in negatives], copy.deepcopy(base).eval(), BasicSRStyleVGG(vgg),
        torch.optim.Adam(ref_model.parameters(), lr=1e-4), LAYER_WEIGHTS, 1.0, periods, decays)
    spnir = SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays)
    trainer = TrainerStep(SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays), tempfile.mkdtemp())
    bf16 = SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays, feature_dtype=torch.bfloat16)
    return {"plain": PlainStep(copy.deepcopy(base)), "reference": reference, "spnir SPN": spnir,
            "spnir train": trainer, "spnir SPN bf16-VGG": bf16}


def batch(cfg: Config, seed: int):
    g = torch.Generator().manual_seed(seed)
    scale = cfg.scale or 1
    gt = torch.rand(cfg.batch, 3, cfg.patch * scale, cfg.patch * scale, generator=g)
    lq = torch.rand(cfg.batch, 3, cfg.patch, cfg.patch, generator=g)
    return lq, gt


def time_ema(model: torch.nn.Module) -> tuple[float, float]:
    """Seconds for one EMA update: Python loop over named_parameters vs spnir's fused update."""
    avg = copy.deepcopy(model)
    ema = ModelEMA(model, 0.999)
    loops, fused = [], []
    for _ in range(20):
        t = time.perf_counter(); loop_ema(model, avg, 0.999); loops.append(time.perf_counter() - t)
        t = time.perf_counter(); ema.update(); fused.append(time.perf_counter() - t)
    return statistics.median(loops), statistics.median(fused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--negatives", default="1,2,4")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="quarter batch, for a fast look")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(f"# SPN step benchmark: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, fp32, reps {args.reps}{', quick' if args.quick else ''}")
    vgg = VGGFeatures("vgg16", list(LAYER_WEIGHTS), weights="random")
    rows = []
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        if args.quick:
            cfg = Config(cfg.preset, cfg.scale, max(1, cfg.batch // 4), cfg.patch)
        for n_neg in (int(n) for n in args.negatives.split(",")):
            steps = make_steps(cfg, n_neg, vgg)
            lq, gt = batch(cfg, 0)
            ref_loss, spnir_loss = steps["reference"](lq, gt), steps["spnir SPN"](lq, gt)
            train_loss = steps["spnir train"](lq, gt)
            for what, loss in (("SPN", spnir_loss), ("train loop", train_loss)):
                assert abs(ref_loss - loss) < 1e-5, f"{name} N={n_neg}: reference loss {ref_loss} vs {what} {loss}"
            bf16_diff = abs(steps["spnir SPN bf16-VGG"](lq, gt) - ref_loss) / abs(ref_loss)
            times = {k: [] for k in steps}
            for rep in range(args.reps):
                lq, gt = batch(cfg, rep + 1)
                for key, step in steps.items():
                    t = time.perf_counter()
                    step(lq, gt)
                    times[key].append(time.perf_counter() - t)
            med = {k: statistics.median(v) for k, v in times.items()}
            loop_s, fused_s = time_ema(steps["plain"].model)
            rows.append((name, cfg, n_neg, med, abs(ref_loss - spnir_loss), bf16_diff, loop_s, fused_s))
            print(f"{name} b{cfg.batch} p{cfg.patch} N={n_neg}: "
                  + ", ".join(f"{k} {v:.3f}s" for k, v in med.items()), flush=True)
    print()
    print("| model | batch/patch | N | plain s | reference s | spnir SPN s | spnir train s | SPN bf16-VGG s "
          "| ref/plain | ref/SPN | ref/train | ref/bf16-VGG | loss diff fp32 | bf16 rel. diff |")
    print("|" + "---|" * 15)
    for name, cfg, n_neg, med, diff, bf16_diff, _, _ in rows:
        p, r, s, t, b = (med[k] for k in ("plain", "reference", "spnir SPN", "spnir train", "spnir SPN bf16-VGG"))
        print(f"| {name} | {cfg.batch}/{cfg.patch} | {n_neg} | {p:.3f} | {r:.3f} | {s:.3f} | {t:.3f} | {b:.3f} | "
              f"{r / p:.2f} | {r / s:.2f} | {r / t:.2f} | {r / b:.2f} | {diff:.1e} | {bf16_diff:.1e} |")
    print("\nCost of N negatives relative to N=1 (step time ratio), and the EMA update:")
    print("| model | N | reference | spnir SPN | EMA loop ms | EMA fused ms | fused EMA % of SPN step |")
    print("|---|---|---|---|---|---|---|")
    first = {}
    for name, cfg, n_neg, med, _, _, loop_s, fused_s in rows:
        first.setdefault(name, med)
        r1, s1 = first[name]["reference"], first[name]["spnir SPN"]
        print(f"| {name} | {n_neg} | {med['reference'] / r1:.2f} | {med['spnir SPN'] / s1:.2f} | {loop_s * 1e3:.2f} | "
              f"{fused_s * 1e3:.2f} | {100 * fused_s / med['spnir SPN']:.3f} |")


if __name__ == "__main__":
    main()
