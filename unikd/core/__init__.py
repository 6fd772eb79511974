"""Pure-PyTorch knowledge-distillation loss core (no detectron2 import).

UniKD: AdaptiveFeatureFusion (paper Eq. 4), FeatureDistributionPredictor, gaussian_kl (Eq. 6),
gaussian_nll (teacher fit), kd_loss (Eq. 1), dkd_loss (decoupled KD) and UniKDLoss (its options: unikd.terms.unikd).
Feature-KD baselines: FitNet hints (hint), attention transfer (attention), SP and RKD (relational),
OFD (ofd) and ReviewKD fusion + HCL (review).
Logit / representation baselines: DIST (dist), NKD (nkd), multi-level logit KD (mlkd) and CRD with its memory
bank (crd).
"""
from .aff import AdaptiveFeatureFusion
from .attention import at_loss, attention_map
from .crd import CRDLoss, ContrastMemory, ContrastSampler, Embed, nce_loss, sample_contrast_indices
from .dist import dist_loss, pearson_rows
from .fdp import FeatureDistributionPredictor
from .gaussian import gaussian_kl, gaussian_nll
from .hint import HintRegressor, hint_loss
from .logit_kd import dkd_loss, kd_loss, per_sample_kd, standardize_logits
from .mlkd import (
    batch_correlation_loss,
    class_confidence_mask,
    class_correlation_loss,
    mlkd_loss,
    sample_confidence_mask,
)
from .nkd import nkd_loss
from .ofd import OFDConnector, gaussian_negative_margin, ofd_loss, ofd_margin_from_features
from .relational import rkd_angle_loss, rkd_distance_loss, rkd_loss, sp_loss
from .review import AttentionBasedFusion, ReviewFusion, hcl_loss
from .unikd import UniKDLoss

__all__ = [
    "AdaptiveFeatureFusion",
    "AttentionBasedFusion",
    "CRDLoss",
    "ContrastMemory",
    "ContrastSampler",
    "Embed",
    "FeatureDistributionPredictor",
    "HintRegressor",
    "OFDConnector",
    "ReviewFusion",
    "UniKDLoss",
    "at_loss",
    "attention_map",
    "batch_correlation_loss",
    "class_confidence_mask",
    "class_correlation_loss",
    "dist_loss",
    "dkd_loss",
    "gaussian_kl",
    "gaussian_negative_margin",
    "gaussian_nll",
    "hcl_loss",
    "hint_loss",
    "kd_loss",
    "mlkd_loss",
    "nce_loss",
    "nkd_loss",
    "ofd_loss",
    "ofd_margin_from_features",
    "pearson_rows",
    "per_sample_kd",
    "rkd_angle_loss",
    "rkd_distance_loss",
    "rkd_loss",
    "sample_confidence_mask",
    "sample_contrast_indices",
    "sp_loss",
    "standardize_logits",
]
