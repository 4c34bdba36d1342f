"""The SPN training step as the official BasicSR-based code does it, written here for side-by-side timing.

What it follows (from the method's released training code): the negatives' outputs under ``no_grad``; for
each negative a BasicSR ``PerceptualLoss(output, negative)`` call, which runs VGG on the output *and* on the
negative (a VGG pass with autograd on the output once per negative); the mean over negatives subtracted
from the pixel loss; then a Python loop over ``named_parameters()`` for the EMA model and for each due
negative refresh. The VGG extractor copies BasicSR's: truncated after the last used layer, in-place ReLU,
cloned outputs.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
from torch import nn

from spnir.features import IMAGENET_MEAN, IMAGENET_STD, VGGFeatures


class BasicSRStyleVGG(nn.Module):
    """VGG features as BasicSR's VGGFeatureExtractor computes them, with the weights of ``source``."""

    def __init__(self, source: VGGFeatures) -> None:
        super().__init__()
        layers = OrderedDict()
        for name, layer in zip(source.names, source.body):
            layers[name] = nn.ReLU(inplace=True) if isinstance(layer, nn.ReLU) else layer
        self.vgg_net = nn.Sequential(layers)
        self.layer_name_list = list(source.layers)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = (x - self.mean) / self.std
        output = {}
        for key, layer in self.vgg_net._modules.items():
            x = layer(x)
            if key in self.layer_name_list:
                output[key] = x.clone()
        return output


def perceptual_l1(vgg: BasicSRStyleVGG, x: torch.Tensor, gt: torch.Tensor, layer_weights: dict[str, float],
                  perceptual_weight: float) -> torch.Tensor:
    """BasicSR's PerceptualLoss with criterion 'l1' and no style term."""
    x_features = vgg(x)
    gt_features = vgg(gt.detach())
    loss = 0
    for k in x_features.keys():
        loss += torch.nn.functional.l1_loss(x_features[k], gt_features[k]) * layer_weights[k]
    return loss * perceptual_weight


@torch.no_grad()
def loop_ema(target: nn.Module, average: nn.Module, decay: float) -> None:
    """BasicSR's ``model_ema``: a Python loop over ``named_parameters()``."""
    target_params = dict(target.named_parameters())
    average_params = dict(average.named_parameters())
    for k in average_params.keys():
        average_params[k].data.mul_(decay).add_(target_params[k].data, alpha=1 - decay)


class ReferenceSPNStep:
    """One optimisation step of the official recipe; ``__call__`` returns the total loss (float)."""

    def __init__(self, model, negatives, ema_model, vgg, optimizer, layer_weights, weight, periods, decays,
                 ema_decay: float = 0.999) -> None:
        self.model, self.negatives, self.ema_model = model, negatives, ema_model
        self.vgg, self.optimizer = vgg, optimizer
        self.layer_weights, self.weight = layer_weights, weight
        self.periods, self.decays, self.ema_decay = periods, decays, ema_decay
        self.iteration = 0

    def __call__(self, lq: torch.Tensor, gt: torch.Tensor) -> float:
        self.iteration += 1
        self.optimizer.zero_grad()
        output = self.model(lq)
        with torch.no_grad():
            neg_out = [net(lq) for net in self.negatives]
        l_total = torch.nn.functional.l1_loss(output, gt)
        l_neg = 0.0
        for neg in neg_out:
            l_neg += perceptual_l1(self.vgg, output, neg, self.layer_weights, self.weight)
        l_total = l_total - l_neg / len(neg_out)
        l_total.backward()
        self.optimizer.step()
        loop_ema(self.model, self.ema_model, self.ema_decay)
        for idx, (period, decay) in enumerate(zip(self.periods, self.decays)):
            if self.iteration % period == 0:
                loop_ema(self.model, self.negatives[idx], decay)
        return float(l_total.detach())
