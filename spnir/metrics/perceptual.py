"""LPIPS (VGG variant, v0.1) and DISTS on spnir's own VGG16, batched; lower is better for both.

Both take two ``(N, 3, H, W)`` float batches in ``[0, 1]`` and return a ``(N,)`` tensor, computed as the
reference packages compute them (``lpips.LPIPS(net="vgg")(x, y, normalize=True)`` and
``DISTS_pytorch.DISTS()(x, y)``), in float32 on the inputs' device:

- LPIPS (Zhang et al. 2018): inputs mapped to ``[-1, 1]`` and by its scaling layer; VGG16 ``relu1_2`` ...
  ``relu5_3``, each unit-normalised over channels; squared differences weighted by the learned 1x1
  linear layers, averaged over space, summed over layers.
- DISTS (Ding et al. 2020): VGG16 with its max pools replaced by L2 pooling (Hanning 3x3, stride 2), on
  ImageNet-normalised inputs; per channel of the input and of the five stages, a structure and a texture
  similarity of the means / (co)variances, weighted by the learned alpha/beta; ``1 -`` their sum.

The learned weights come from :mod:`spnir.weights.perceptual`; the VGG16 from :mod:`spnir.features`.
"""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from spnir.errors import SpnirError
from spnir.features import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures
from spnir.weights.perceptual import describe_file, load_learned_state, resolve_learned_weights

STAGES = ("relu1_2", "relu2_2", "relu3_3", "relu4_3", "relu5_3")
_WIDTHS = (64, 128, 256, 512, 512)
_LPIPS_SHIFT = (-0.030, -0.088, -0.188)
_LPIPS_SCALE = (0.458, 0.448, 0.450)
_DISTS_CHANNELS = (3, *_WIDTHS)


class PerceptualMetric(nn.Module):
    """Shared parts: the frozen VGG16, the files used, and the ``(N,)`` result of ``forward(x, y)``."""

    name = ""

    def __init__(self, vgg_weights: str | os.PathLike) -> None:
        super().__init__()
        self.vgg = VGGFeatures("vgg16", STAGES, vgg_weights=vgg_weights, input_norm=False)
        if self.vgg.convention == "caffe":
            raise SpnirError(f"{self.name or 'LPIPS/DISTS'} cannot use {self.vgg.feature_space}: its learned layers "
                             "were fit on torchvision's ImageNet VGG16: use vgg_weights 'imagenet', or 'random' for "
                             "tests")
        self.sources = [f"VGG16: {self.vgg.feature_space}"]

    def _learned_state(self, kind: str, learned: str | os.PathLike | None) -> tuple[Path, dict[str, torch.Tensor]]:
        """The learned-weights file (``learned``, else the cached release) and its tensors; noted in sources."""
        path = resolve_learned_weights(kind) if learned is None else Path(learned).expanduser()
        if not path.is_file():
            raise SpnirError(f"{kind} learned weights file {path} does not exist")
        self.sources.append(f"{kind} learned weights: {describe_file(kind, path)}")
        return path, load_learned_state(kind, path)

    def train(self, mode: bool = True) -> PerceptualMetric:
        return super().train(False)

    def _check(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.shape != y.shape or x.dim() != 4 or x.shape[1] != 3:
            raise SpnirError(f"{self.name} needs two (N, 3, H, W) batches of one shape, got "
                             f"{tuple(x.shape)} and {tuple(y.shape)}")
        return x.float(), y.float()


class LPIPS(PerceptualMetric):
    """LPIPS v0.1 with the VGG16 trunk; ``forward(x, y)`` on ``[0, 1]`` batches gives ``(N,)`` distances.

    Args:
        vgg_weights: the VGG16 (``"imagenet"``: the cached torchvision file; a path; ``"random"``).
        learned: the linear layers' file; default the cached release (``spnir weights lpips-vgg``).
    """

    name = "LPIPS"

    shift: torch.Tensor
    scale: torch.Tensor

    def __init__(self, vgg_weights: str | os.PathLike = "imagenet", learned: str | os.PathLike | None = None) -> None:
        super().__init__(vgg_weights)
        path, state = self._learned_state("lpips-vgg", learned)
        weights = []
        for i, width in enumerate(_WIDTHS):
            key = f"lin{i}.model.1.weight"
            tensor = state.get(key)
            if tensor is None or tuple(tensor.shape) != (1, width, 1, 1):
                found = tuple(tensor.shape) if tensor is not None else "missing"
                raise SpnirError(f"{path}: {key} is {found}, expected (1, {width}, 1, 1) "
                                 f"(lpips's v0.1/vgg.pth)")
            weights.append(tensor.float().reshape(1, width, 1, 1))
        self.lins = nn.ParameterList([nn.Parameter(w, requires_grad=False) for w in weights])
        self.register_buffer("shift", torch.tensor(_LPIPS_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_LPIPS_SCALE).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self._check(x, y)
        fx = self.vgg(((2 * x - 1) - self.shift) / self.scale)
        fy = self.vgg(((2 * y - 1) - self.shift) / self.scale)
        total = x.new_zeros(x.shape[0])
        for stage, weight in zip(STAGES, self.lins):
            diff = (_unit(fx[stage]) - _unit(fy[stage])) ** 2
            total = total + F.conv2d(diff, weight).mean(dim=(1, 2, 3))
        return total


def _unit(features: torch.Tensor, eps: float = 1e-10) -> torch.Tensor:
    return features / (torch.sqrt(torch.sum(features**2, dim=1, keepdim=True)) + eps)


class DISTS(PerceptualMetric):
    """DISTS on VGG16 with L2 pooling; ``forward(x, y)`` on ``[0, 1]`` batches gives ``(N,)`` distances.

    Args:
        vgg_weights: the VGG16 (``"imagenet"``: the cached torchvision file; a path; ``"random"``).
        learned: the alpha/beta file; default the cached release (``spnir weights dists``).
    """

    name = "DISTS"

    window: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor

    def __init__(self, vgg_weights: str | os.PathLike = "imagenet", learned: str | os.PathLike | None = None) -> None:
        super().__init__(vgg_weights)
        path, state = self._learned_state("dists", learned)
        total = sum(_DISTS_CHANNELS)
        for key in ("alpha", "beta"):
            tensor = state.get(key)
            if tensor is None or tuple(tensor.shape) != (1, total, 1, 1):
                found = tuple(tensor.shape) if tensor is not None else "missing"
                raise SpnirError(f"{path}: {key} is {found}, expected (1, {total}, 1, 1) "
                                 f"(DISTS_pytorch's weights.pt)")
        self.alpha = nn.Parameter(state["alpha"].float(), requires_grad=False)
        self.beta = nn.Parameter(state["beta"].float(), requires_grad=False)
        window = torch.tensor([0.5, 1.0, 0.5])  # np.hanning(5)[1:-1]
        window = window[:, None] * window[None, :]
        self.register_buffer("window", (window / window.sum()).view(1, 1, 3, 3), persistent=False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.requires_grad_(False)
        self.eval()

    def _stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The input and the five stage outputs (max pools replaced by L2 pooling)."""
        out = [x]
        h = (x - self.mean) / self.std
        for name, layer in zip(self.vgg.names, self.vgg.body):
            h = self._l2_pool(h) if isinstance(layer, nn.MaxPool2d) else layer(h)
            if name in STAGES:
                out.append(h)
        return out

    def _l2_pool(self, x: torch.Tensor) -> torch.Tensor:
        window = self.window.expand(x.shape[1], 1, 3, 3)
        return (F.conv2d(x**2, window, stride=2, padding=1, groups=x.shape[1]) + 1e-12).sqrt()

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x, y = self._check(x, y)
        c1 = c2 = 1e-6
        w_sum = self.alpha.sum() + self.beta.sum()
        alphas = torch.split(self.alpha / w_sum, list(_DISTS_CHANNELS), dim=1)
        betas = torch.split(self.beta / w_sum, list(_DISTS_CHANNELS), dim=1)
        structure = texture = x.new_zeros(x.shape[0], 1, 1, 1)
        for fx, fy, alpha, beta in zip(self._stages(x), self._stages(y), alphas, betas):
            mx, my = fx.mean([2, 3], keepdim=True), fy.mean([2, 3], keepdim=True)
            s1 = (2 * mx * my + c1) / (mx**2 + my**2 + c1)
            structure = structure + (alpha * s1).sum(1, keepdim=True)
            vx = ((fx - mx) ** 2).mean([2, 3], keepdim=True)
            vy = ((fy - my) ** 2).mean([2, 3], keepdim=True)
            cov = (fx * fy).mean([2, 3], keepdim=True) - mx * my
            s2 = (2 * cov + c2) / (vx + vy + c2)
            texture = texture + (beta * s2).sum(1, keepdim=True)
        return 1 - (structure + texture).flatten()


PERCEPTUAL: dict[str, type[PerceptualMetric]] = {"lpips": LPIPS, "dists": DISTS}
