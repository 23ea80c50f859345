"""scgn: SCGN denoising and atom-column localization of HRTEM frames (``scgn.denoise``, ``scgn.locate_atoms``)."""
__version__ = "0.1.0"
__all__ = ["denoise", "load_model", "locate_atoms"]


def __getattr__(name: str):  # the API loads torch: import it only when used
    if name in __all__:
        from scgn import api

        return getattr(api, name)
    raise AttributeError(f"module 'scgn' has no attribute {name!r}")
