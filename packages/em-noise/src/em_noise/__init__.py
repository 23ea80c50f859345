"""em-noise: shared base for EM image restoration."""
__version__ = "0.1.0"
