"""Linear models: batched PLS1 for RS-LOCAL-v2.0 and the PLS baselines (Shen et al. 2022, section 2.3.2)."""

from dtl_dist.linear.pls import PLSRegressor
from dtl_dist.linear.pls_kernel import (
    PLS1Fit,
    pls1_cv_ncomp,
    pls1_fit,
    pls1_fit_predict,
    pls1_predict,
    pls1_transform,
)

__all__ = [
    "PLS1Fit",
    "PLSRegressor",
    "pls1_cv_ncomp",
    "pls1_fit",
    "pls1_fit_predict",
    "pls1_predict",
    "pls1_transform",
]
