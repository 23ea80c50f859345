"""em-noise: shared base for EM image restoration (I/O, noise models, calibration, synthesis, metrics, tiling)."""
__version__ = "0.1.0"


def __getattr__(name: str):
    if name == "calibrate":  # em_noise.calibrate(image, mode): the callable calibration module, imported on use
        import importlib

        return importlib.import_module("em_noise.calibrate")
    raise AttributeError(f"module 'em_noise' has no attribute {name!r}")
