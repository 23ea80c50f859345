"""sfin: SFIN enhancement of atomic-resolution HAADF / BF STEM images (``sfin.enhance``, ``sfin-enhance``)."""
__version__ = "0.1.0"
__all__ = ["enhance", "load_model"]


def __getattr__(name: str):  # the API loads torch: import it only when used
    if name in __all__:
        from sfin import api

        return getattr(api, name)
    raise AttributeError(f"module 'sfin' has no attribute {name!r}")
