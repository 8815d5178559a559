"""gradgeo: better generalization from the same gradients."""

from gradgeo import transforms

__all__ = ["transforms"]
__version__ = "0.1.0"
