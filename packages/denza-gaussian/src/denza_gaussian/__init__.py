"""DenZa-Gaussian: 3-D Gaussian splatting tomography for sparse-view ADF-STEM tilt series."""
__version__ = "0.2.0"

from .api import reconstruct  # noqa: E402

__all__ = ["reconstruct", "__version__"]
