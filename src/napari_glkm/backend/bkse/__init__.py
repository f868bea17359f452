"""BKSE: encoded blur-kernel space (Tran et al., "Explore Image Deblurring via Encoded Blur
Kernel Space", CVPR 2021) — kernel extractor ``G``, blur operator ``F``, blur transfer,
blur synthesis and code-space deblurring. No Qt or napari imports.
"""

from .api import load_bkse, synthesize_blur, transfer_blur
from .deblur import BKSEResult, BKSEStep, deblur_bkse, iter_deblur_bkse
from .networks import BKSEConfig, BKSENet

__all__ = ["load_bkse", "transfer_blur", "synthesize_blur", "deblur_bkse", "iter_deblur_bkse",
           "BKSEStep", "BKSEResult", "BKSEConfig", "BKSENet"]
