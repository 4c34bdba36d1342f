"""spnir: Self-Prior guided Negative loss (SPN) for image restoration.

The drop-in piece::

    from spnir import SPN
    spn = SPN(model, weight=0.001)
    loss = F.l1_loss(out, gt) + spn(lq, out)
    ...
    spn.step()
"""
from spnir.allocator import keep_freed_memory
from spnir.errors import SpnirError
from spnir.features import VGGFeatures
from spnir.negatives import NegativeBank
from spnir.spn import SPN, NegativeLoss

__all__ = ["SPN", "NegativeLoss", "NegativeBank", "VGGFeatures", "SpnirError", "keep_freed_memory"]
__version__ = "0.1.0"
