"""Image-quality metrics: PSNR/SSIM as the field computes them (:mod:`~spnir.metrics.psnr_ssim`), LPIPS and DISTS
(:mod:`~spnir.metrics.perceptual`), and the set of them one evaluation measures (:mod:`~spnir.metrics.suite`)."""
from spnir.metrics.perceptual import DISTS, LPIPS
from spnir.metrics.psnr_ssim import CONVENTIONS, MetricSettings, psnr, rgb_to_y, ssim
from spnir.metrics.suite import METRICS, MetricSuite

__all__ = ["CONVENTIONS", "DISTS", "LPIPS", "METRICS", "MetricSettings", "MetricSuite", "psnr", "rgb_to_y", "ssim"]
