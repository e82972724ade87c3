"""1D-CNNs of the paper (section 2.3): builder, search space, fold training and the paper's architectures."""

from dtl_dist.nn.builder import (
    ACTIVATIONS,
    CNN,
    CNNConfig,
    ConvBlock,
    FCBlock,
    build_cnn,
    check_config,
    config_problems,
    flat_features,
    output_length,
    parameter_count,
    same_padding,
)
from dtl_dist.nn.folds import kfold_assignment
from dtl_dist.nn.space import Categorical, Float, Int, SearchSpace, default_space
from dtl_dist.nn.trainer import (
    OPTIMIZERS,
    CVResult,
    FitResult,
    FoldEnsemble,
    TrainConfig,
    cross_validate,
    fit_model,
    fold_seed,
)

__all__ = [
    "ACTIVATIONS",
    "CNN",
    "CNNConfig",
    "CVResult",
    "Categorical",
    "ConvBlock",
    "FCBlock",
    "FitResult",
    "Float",
    "FoldEnsemble",
    "Int",
    "OPTIMIZERS",
    "SearchSpace",
    "TrainConfig",
    "build_cnn",
    "check_config",
    "config_problems",
    "cross_validate",
    "default_space",
    "fit_model",
    "flat_features",
    "fold_seed",
    "kfold_assignment",
    "output_length",
    "parameter_count",
    "same_padding",
]
