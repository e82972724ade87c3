"""dtl-dist: deep transfer learning of soil spectral libraries for local SOC estimates (Shen et al. 2022)."""

from dtl_dist.errors import UserInputError

__version__ = "0.1.0"
__all__ = ["CNNRegressor", "UserInputError", "__version__"]


def __getattr__(name):
    """``dtl_dist.CNNRegressor`` without importing torch for every ``import dtl_dist`` (the CLI starts faster)."""
    if name == "CNNRegressor":
        from dtl_dist.nn.regressor import CNNRegressor

        return CNNRegressor
    raise AttributeError(f"module 'dtl_dist' has no attribute {name!r}")
