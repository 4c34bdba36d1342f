"""SPN step cost: plain L1 step vs the official recipe (bench/reference_spn.py) vs spnir's SPN object.

    .venv/bin/python bench/spn_step.py [--configs edsr-baseline,...] [--negatives 1,2,4] [--reps 5] [--quick]
    .venv/bin/python bench/spn_step.py --device cuda --gpu-variants   # adds bf16 autocast and torch.compile

In one process, interleaved, medians over repeated steps. Before timing, each configuration checks that the
reference and spnir steps give the same loss on the same batch and weights (to 1e-5), so speed is never
bought with different maths. VGG weights are seeded random (timing does not depend on their values).

The allocator is a process setting, so by default (``--allocator both``) the whole table is measured twice, in
two fresh processes: with malloc as the system sets it (as the official code runs) and with freed memory kept
(``spnir.allocator.keep_freed_memory``, as ``spnir train`` runs); then each step is also printed as it runs by
default, across the two processes. ``--floor`` adds the compute floor: the parts SPN cannot avoid, timed alone.
"""
from __future__ import annotations

import argparse
import copy
import json
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from reference_spn import BasicSRStyleVGG, ReferenceSPNStep, loop_ema

from spnir import SPN, VGGFeatures
from spnir.allocator import keep_freed_memory
from spnir.archs import create_model
from spnir.ema import ModelEMA
from spnir.losses import L1Loss
from spnir.train.distributed import DistContext
from spnir.train.run_log import RunLogger
from spnir.train.trainer import Schedule, Trainer, TrainParts
from spnir.train.training_state import CheckpointDir

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
    "smoke": Config("edsr-baseline", 2, 2, 16),  # checks the script itself in seconds
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
        return float(loss.detach())


class SpnirStep:
    """The drop-in loop of the README with spnir's SPN and ModelEMA."""

    def __init__(self, model, negatives, vgg, periods, decays, feature_dtype=None, autocast=None, compile=False):
        self.model, self.opt = model, torch.optim.Adam(model.parameters(), lr=1e-4)
        self.spn = SPN(model, weight=1.0, layer_weights=LAYER_WEIGHTS, features=torch.compile(vgg) if compile else vgg,
                       periods=periods, decays=decays, feature_dtype=feature_dtype)
        for mine, given in zip(self.spn.negatives.models, negatives):
            mine.load_state_dict(given.state_dict())
        self.ema = ModelEMA(model, 0.999)
        self.forward = torch.compile(model) if compile else model
        self.autocast = autocast

    def __call__(self, lq, gt):
        self.opt.zero_grad()
        with torch.autocast(lq.device.type, dtype=self.autocast or torch.bfloat16, enabled=self.autocast is not None):
            out = self.forward(lq)
            loss = F.l1_loss(out.float(), gt) + self.spn(lq, out)
        loss.backward()
        self.opt.step()
        self.ema.update()
        self.spn.step()
        return float(loss.detach())


class FloorParts:
    """The work SPN cannot avoid, timed part by part: the N negatives' forwards without autograd, VGG with
    autograd on the output plus its backward, VGG without autograd on the N negatives. Added to the plain step,
    this is the compute floor of an SPN step in a given precision; a step within a few percent of it has no
    overhead left to remove."""

    def __init__(self, negatives, vgg: VGGFeatures, gt: torch.Tensor):
        self.negatives, self.vgg = negatives, vgg
        with torch.no_grad():
            self.targets = {k: v.clone() for k, v in vgg(gt).items()}

    def negative_forwards(self, lq, gt):
        with torch.inference_mode():
            return [net(lq) for net in self.negatives]

    def vgg_output_forward_backward(self, lq, gt):
        x = gt.clone().requires_grad_(True)
        feats = self.vgg(x)
        loss = sum(w * F.l1_loss(feats[k], self.targets[k]) for k, w in LAYER_WEIGHTS.items())
        loss.backward()

    def vgg_negatives_forward(self, lq, gt):
        with torch.inference_mode():
            self.vgg(torch.cat([gt] * len(self.negatives)))

    def steps(self) -> dict:
        return {"floor: negative forwards": self.negative_forwards,
                "floor: VGG fwd+bwd on output": self.vgg_output_forward_backward,
                "floor: VGG fwd on negatives": self.vgg_negatives_forward}


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


def make_steps(cfg: Config, n_neg: int, vgg: VGGFeatures, device: torch.device, gpu_variants: bool):
    base = build(cfg).to(device)
    negatives = perturbed_copies(base, n_neg)
    periods, decays = PERIODS[:n_neg], (0.999,) * n_neg
    ref_model = copy.deepcopy(base)
    reference = ReferenceSPNStep(
        ref_model, [copy.deepcopy(n) for n in negatives], copy.deepcopy(base).eval(), BasicSRStyleVGG(vgg),
        torch.optim.Adam(ref_model.parameters(), lr=1e-4), LAYER_WEIGHTS, 1.0, periods, decays)
    spnir = SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays)
    trainer = TrainerStep(SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays), tempfile.mkdtemp())
    bf16 = SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays, feature_dtype=torch.bfloat16)
    steps = {"plain": PlainStep(copy.deepcopy(base)), "reference": reference, "spnir SPN": spnir,
             "spnir train": trainer, "spnir SPN bf16-VGG": bf16}
    if gpu_variants:
        steps["spnir bf16 autocast"] = SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays,
                                                 autocast=torch.bfloat16)
        steps["spnir bf16+compile"] = SpnirStep(copy.deepcopy(base), negatives, vgg, periods, decays,
                                                autocast=torch.bfloat16, compile=True)
    return steps


def batch(cfg: Config, seed: int, device: torch.device):
    g = torch.Generator().manual_seed(seed)
    scale = cfg.scale or 1
    gt = torch.rand(cfg.batch, 3, cfg.patch * scale, cfg.patch * scale, generator=g)
    lq = torch.rand(cfg.batch, 3, cfg.patch, cfg.patch, generator=g)
    return lq.to(device), gt.to(device)


def set_allocator(mode: str) -> None:
    """``kept``: keep freed memory in this process (spnir's default); ``system``: leave malloc alone."""
    if mode == "kept" and not keep_freed_memory():
        raise SystemExit("--allocator kept needs glibc malloc (Linux)")


def minor_faults() -> int:
    """Page faults of this process so far (memory the kernel had to map and zero)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ema(model: torch.nn.Module, device: torch.device) -> tuple[float, float]:
    """Seconds for one EMA update: Python loop over named_parameters vs spnir's fused update."""
    avg = copy.deepcopy(model)
    ema = ModelEMA(model, 0.999)
    times: dict[str, list[float]] = {"loop": [], "fused": []}
    for _ in range(20):
        for key, update in (("loop", lambda: loop_ema(model, avg, 0.999)), ("fused", ema.update)):
            synchronize(device)
            t = time.perf_counter()
            update()
            synchronize(device)
            times[key].append(time.perf_counter() - t)
    return statistics.median(times["loop"]), statistics.median(times["fused"])


def measure(args) -> list[dict]:
    """Time every step of every configuration and N; one dict per row (seconds are medians)."""
    device = torch.device(args.device)
    vgg = VGGFeatures("vgg16", list(LAYER_WEIGHTS), vgg_weights="random").to(device)
    rows = []
    for name in args.configs.split(","):
        cfg = CONFIGS[name]
        if args.quick:
            cfg = Config(cfg.preset, cfg.scale, max(1, cfg.batch // 4), cfg.patch)
        for n_neg in (int(n) for n in args.negatives.split(",")):
            steps = make_steps(cfg, n_neg, vgg, device, args.gpu_variants)
            lq, gt = batch(cfg, 0, device)
            losses = {}
            for key, step in steps.items():  # also the warm-up; the same RNG state for drop-path models
                if key != "plain":
                    torch.manual_seed(0)
                    losses[key] = step(lq, gt)
            ref_loss = losses.pop("reference")
            for what in ("spnir SPN", "spnir train"):
                assert abs(ref_loss - losses[what]) < 1e-5, (
                    f"{name} N={n_neg}: reference loss {ref_loss} vs {what} {losses[what]}")
            steps["plain"](lq, gt)
            parts = FloorParts(steps["spnir SPN"].spn.negatives.models, vgg, gt).steps() if args.floor else {}
            for part in parts.values():  # warm-up
                part(lq, gt)
            steps.update(parts)
            times: dict[str, list[float]] = {k: [] for k in steps}
            faults: dict[str, list[int]] = {k: [] for k in steps}
            for rep in range(args.reps):
                lq, gt = batch(cfg, rep + 1, device)
                for key, step in steps.items():
                    synchronize(device)
                    f, t = minor_faults(), time.perf_counter()
                    step(lq, gt)
                    synchronize(device)
                    times[key].append(time.perf_counter() - t)
                    faults[key].append(minor_faults() - f)
            med = {k: statistics.median(v) for k, v in times.items()}
            floor_parts = {k.removeprefix("floor: "): med.pop(k) for k in parts}
            loop_s, fused_s = time_ema(steps["plain"].model, device)
            rows.append({"config": name, "batch": cfg.batch, "patch": cfg.patch, "N": n_neg, "seconds": med,
                         "loss_rel_diff": {k: abs(v - ref_loss) / abs(ref_loss) for k, v in losses.items()},
                         "ema_loop": loop_s, "ema_fused": fused_s, "floor_parts": floor_parts,
                         "page_faults": {k: statistics.median(v) for k, v in faults.items() if k not in parts},
                         "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024})
            print(f"{name} b{cfg.batch} p{cfg.patch} N={n_neg}: "
                  + ", ".join(f"{k} {v:.3f}s" for k, v in med.items()), flush=True)
    return rows


def print_tables(rows: list[dict]) -> None:
    """Steps side by side, the cost of N negatives, the EMA update and (if timed) the compute floor."""
    variants = [k for k in rows[0]["seconds"] if k not in ("plain", "reference")]
    print()
    print("| model | batch/patch | N | plain s | reference s | " + " | ".join(f"{v} s" for v in variants)
          + " | ref/plain | " + " | ".join(f"ref/{v}" for v in variants)
          + " | " + " | ".join(f"loss rel. diff {v}" for v in variants) + " |")
    print("|" + "---|" * (5 + 3 * len(variants) + 1))
    for row in rows:
        sec = row["seconds"]
        r = sec["reference"]
        print(f"| {row['config']} | {row['batch']}/{row['patch']} | {row['N']} | {sec['plain']:.3f} | {r:.3f} | "
              + " | ".join(f"{sec[v]:.3f}" for v in variants) + f" | {r / sec['plain']:.2f} | "
              + " | ".join(f"{r / sec[v]:.2f}" for v in variants) + " | "
              + " | ".join(f"{row['loss_rel_diff'][v]:.1e}" for v in variants) + " |")
    print("\nCost of N negatives relative to N=1 (step time ratio), and the EMA update:")
    print("| model | N | reference | spnir SPN | EMA loop ms | EMA fused ms | fused EMA % of SPN step |")
    print("|---|---|---|---|---|---|---|")
    first: dict[str, dict] = {}
    for row in rows:
        sec = first.setdefault(row["config"], row["seconds"])
        now = row["seconds"]
        print(f"| {row['config']} | {row['N']} | {now['reference'] / sec['reference']:.2f} | "
              f"{now['spnir SPN'] / sec['spnir SPN']:.2f} | {row['ema_loop'] * 1e3:.2f} | "
              f"{row['ema_fused'] * 1e3:.2f} | {100 * row['ema_fused'] / now['spnir SPN']:.3f} |")
    print("\nPage faults per step (median; each fault maps and zeroes a 4 KiB page):")
    keys = list(rows[0]["page_faults"])
    print("| model | N | " + " | ".join(keys) + " |")
    print("|" + "---|" * (2 + len(keys)))
    for row in rows:
        print(f"| {row['config']} | {row['N']} | " + " | ".join(f"{row['page_faults'][k]:,.0f}" for k in keys) + " |")
    if rows[0]["floor_parts"]:
        print_floor(rows, variants)


def print_floor(rows: list[dict], variants: list[str]) -> None:
    """Each step against the fp32 compute floor (plain step + the parts SPN cannot avoid)."""
    print("\nCompute floor (fp32): plain step + negative forwards + VGG fwd+bwd on the output + VGG fwd on the "
          "negatives, each timed alone in the same loop; step / floor:")
    part_names = list(rows[0]["floor_parts"])
    print("| model | N | " + " | ".join(f"{p} s" for p in part_names)
          + " | floor s | reference/floor | " + " | ".join(f"{v}/floor" for v in variants) + " |")
    print("|" + "---|" * (3 + len(part_names) + 1 + len(variants)))
    for row in rows:
        sec = row["seconds"]
        floor = sec["plain"] + sum(row["floor_parts"].values())
        print(f"| {row['config']} | {row['N']} | " + " | ".join(f"{row['floor_parts'][p]:.3f}" for p in part_names)
              + f" | {floor:.3f} | {sec['reference'] / floor:.2f} | "
              + " | ".join(f"{sec[v] / floor:.2f}" for v in variants) + " |")


def print_across_allocators(system: list[dict], kept: list[dict]) -> None:
    """Each step as it runs by default: the reference under the system allocator (as the official code runs),
    spnir's steps with freed memory kept (as ``spnir train`` runs). Two processes, one after the other."""
    variants = [k for k in kept[0]["seconds"] if k not in ("plain", "reference")]
    print("\nAcross the two processes: reference with the system allocator / spnir with freed memory kept "
          "(as each runs by default):")
    print("| model | N | reference (system) s | " + " | ".join(f"{v} (kept) s" for v in variants)
          + " | " + " | ".join(f"ref/{v}" for v in variants) + " |")
    print("|" + "---|" * (3 + 2 * len(variants)))
    for a, b in zip(system, kept):
        r = a["seconds"]["reference"]
        print(f"| {a['config']} | {a['N']} | {r:.3f} | " + " | ".join(f"{b['seconds'][v]:.3f}" for v in variants)
              + " | " + " | ".join(f"{r / b['seconds'][v]:.2f}" for v in variants) + " |")
    if "peak_rss_mib" in system[-1] and "peak_rss_mib" in kept[-1]:
        print("Peak resident memory of the process (all steps of all rows): "
              f"system {system[-1]['peak_rss_mib']:.0f} MiB, "
              f"kept {kept[-1]['peak_rss_mib']:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default=",".join(c for c in CONFIGS if c != "smoke"))
    parser.add_argument("--negatives", default="1,2,4")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="quarter batch, for a fast look")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--floor", action="store_true",
                        help="also time the parts SPN cannot avoid and print each step against their sum")
    parser.add_argument("--gpu-variants", action="store_true",
                        help="also time spnir under bf16 autocast, and bf16 autocast + torch.compile")
    parser.add_argument("--allocator", choices=("system", "kept", "both"), default="both",
                        help="malloc as the system sets it, with freed memory kept (spnir.allocator, as spnir train "
                             "runs), or both: one fresh process each, then the steps across them")
    parser.add_argument("--json", help="also write the rows to this file")
    args = parser.parse_args()
    if args.allocator == "both":
        results = {}
        for mode in ("system", "kept"):
            with tempfile.NamedTemporaryFile(suffix=".json") as out:
                subprocess.run([sys.executable, __file__, *sys.argv[1:], "--allocator", mode, "--json", out.name],
                               check=True)
                results[mode] = json.loads(Path(out.name).read_text())
        print_across_allocators(results["system"], results["kept"])
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))
        return
    set_allocator(args.allocator)
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if device.type == "cuda":
        where = torch.cuda.get_device_name(device)
    else:
        where = platform.processor() or platform.machine()
    print(f"# SPN step benchmark: {where}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"reps {args.reps}{', quick' if args.quick else ''}, allocator: {args.allocator}; "
          "fp32 unless the column says otherwise", flush=True)
    rows = measure(args)
    print_tables(rows)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
