"""dtl-dist: deep transfer learning of soil spectral libraries for local SOC estimates (Shen et al. 2022)."""

from dtl_dist.errors import UserInputError

__version__ = "0.1.0"
__all__ = ["UserInputError", "__version__"]
