"""Pure-PyTorch knowledge-distillation loss core (no detectron2 import).

UniKD: AdaptiveFeatureFusion (paper Eq. 4), FeatureDistributionPredictor, gaussian_kl (Eq. 6),
gaussian_nll (teacher fit), kd_loss (Eq. 1), dkd_loss (decoupled KD), UniKDLoss and UniKDOptions.
"""
from .aff import AdaptiveFeatureFusion
from .fdp import FeatureDistributionPredictor
from .gaussian import gaussian_kl, gaussian_nll
from .logit_kd import dkd_loss, kd_loss
from .options import UniKDOptions
from .unikd import UniKDLoss

__all__ = [
    "AdaptiveFeatureFusion",
    "FeatureDistributionPredictor",
    "UniKDLoss",
    "UniKDOptions",
    "dkd_loss",
    "gaussian_kl",
    "gaussian_nll",
    "kd_loss",
]
