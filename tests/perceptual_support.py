"""Same-format stand-ins for LPIPS's and DISTS's learned weights (seeded; no third-party file in the repo),
and the seeded image pair the literal reference values in tests/test_perceptual.py were computed on."""
from __future__ import annotations

import torch

LPIPS_WIDTHS = (64, 128, 256, 512, 512)
DISTS_CHANNELS = 3 + 64 + 128 + 256 + 512 + 512


def synthetic_lpips_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``lin{i}.model.1.weight`` of shape (1, C, 1, 1), non-negative as the released ones."""
    g = torch.Generator().manual_seed(seed)
    return {f"lin{i}.model.1.weight": torch.rand(1, w, 1, 1, generator=g) * 0.2 for i, w in enumerate(LPIPS_WIDTHS)}


def synthetic_dists_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """``alpha``/``beta`` of shape (1, 1475, 1, 1), around 0.1 as the released ones."""
    g = torch.Generator().manual_seed(seed)
    return {k: 0.05 + 0.1 * torch.rand(1, DISTS_CHANNELS, 1, 1, generator=g) for k in ("alpha", "beta")}


def seeded_image_pair(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two (2, 3, 40, 48) batches in [0, 1]: images and noisy copies."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(2, 3, 40, 48, generator=g)
    y = (x + 0.1 * torch.randn(2, 3, 40, 48, generator=g)).clamp(0, 1)
    return x, y
