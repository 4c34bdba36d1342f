"""SPN dropped into a plain PyTorch training loop: denoising real photographs for about a minute.

    python examples/drop_in_loop.py [--seconds 60] [--vgg-weights imagenet|random|PATH] [--checkpoint run.pt]

The three SPN lines are marked ``# SPN``: the loss object, ``spn.attach(opt)`` and the term in the loss. Once
attached, ``opt.step()`` advances the negatives and ``opt.state_dict()`` carries them. With ``--checkpoint`` the run
continues from that file when it exists (the negatives come back with the optimizer) and writes it at the end.
The images are scikit-image's bundled photographs (no download).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from skimage import data as skdata
from torch import nn

from spnir import SPN, SpnirError


def photo_patches(size: int = 64) -> torch.Tensor:
    """Non-overlapping patches of four bundled photographs, (N, 3, size, size) in [0, 1]."""
    patches = []
    for image in (skdata.astronaut(), skdata.coffee(), skdata.chelsea(), skdata.rocket()):
        t = torch.from_numpy(image.copy()).permute(2, 0, 1).float() / 255
        t = t[:, : t.shape[1] // size * size, : t.shape[2] // size * size]
        patches.append(t.unfold(1, size, size).unfold(2, size, size).permute(1, 2, 0, 3, 4).reshape(-1, 3, size, size))
    return torch.cat(patches)


def small_denoiser(width: int = 32) -> nn.Module:
    layers: list[nn.Module] = [nn.Conv2d(3, width, 3, padding=1), nn.ReLU()]
    for _ in range(3):
        layers += [nn.Conv2d(width, width, 3, padding=1), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(width, 3, 3, padding=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--vgg-weights", default="imagenet", help="imagenet (torch hub cache), random, or a path")
    parser.add_argument("--sigma", type=float, default=25.0, help="noise std in 0..255 units")
    parser.add_argument("--checkpoint", type=Path, help="continue from this file if it exists; written at the end")
    args = parser.parse_args()
    torch.manual_seed(0)

    gt_all = photo_patches()
    model = small_denoiser()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    try:
        spn = SPN(model, weight=0.001, periods=(20,), decays=(0.5,), vgg_weights=args.vgg_weights)  # SPN
    except SpnirError as exc:
        raise SystemExit(f"{exc}\n(this example: --vgg-weights random)") from exc
    spn.attach(opt)  # SPN
    if args.checkpoint is not None and args.checkpoint.exists():
        state = torch.load(args.checkpoint, weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])  # also the negatives and their schedule
        print(f"continuing from {args.checkpoint}: the negatives have taken {spn.negatives.steps} steps")
    print(f"SPN feature space: {spn.feature_space}")
    print(f"training a {sum(p.numel() for p in model.parameters())}-parameter denoiser on {len(gt_all)} "
          f"real 64x64 patches, sigma {args.sigma:g}, for {args.seconds:g} s")

    start, step = time.time(), 0
    while time.time() - start < args.seconds:
        gt = gt_all[torch.randint(len(gt_all), (8,))]
        lq = (gt + args.sigma / 255 * torch.randn_like(gt)).clamp(0, 1)
        out = model(lq)
        recon = F.l1_loss(out, gt)
        loss = recon + spn(lq, out)  # SPN
        opt.zero_grad()
        loss.backward()
        opt.step()  # also refreshes the negatives every 20 steps
        step += 1
        if step % 25 == 0:
            s = spn.stats()
            print(f"step {step:4d}  l1 {recon.item():.4f}  neg distance {s['neg_distance']:.4f}  "
                  f"neg term {s['neg_term']:+.6f}")

    with torch.no_grad():
        gt = gt_all[:16]
        lq = (gt + args.sigma / 255 * torch.randn_like(gt)).clamp(0, 1)
        psnr_in = -10 * torch.log10(F.mse_loss(lq, gt)).item()
        psnr_out = -10 * torch.log10(F.mse_loss(model(lq).clamp(0, 1), gt)).item()
    print(f"done: {step} steps in {time.time() - start:.0f} s; PSNR on 16 patches: noisy {psnr_in:.2f} dB "
          f"-> restored {psnr_out:.2f} dB; the negatives have taken {spn.negatives.steps} steps")
    if args.checkpoint is not None:
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict()}, args.checkpoint)
        print(f"wrote {args.checkpoint} (model and optimizer; the optimizer's state holds the negatives)")


if __name__ == "__main__":
    main()
