"""Estimate the noise parameters of :mod:`em_noise.noise` from an image, so synthesis can imitate an instrument.

``em_noise.calibrate(image, mode)`` (this module is callable: the same as :func:`calibrate`) returns an
:mod:`em_noise.params` model on the models' 0–255 scale with the map to the image's own units
(``params.intensity``) and diagnostics (``params.calibration``: standard errors, the parameters one image leaves
unidentified).  ``calibrate_frames`` / ``combine_calibrations`` handle stacks; ``save_params`` / ``load_params``
write and read the JSON.  Parts: ``stem`` (pointwise and scan noise), ``background``, ``hrtem``, ``combine``,
``scale`` (internal scale and read-out), ``tolerance``; the derivations are in ``docs/calibration.md``.
"""
from __future__ import annotations

import sys
import types

from em_noise.calibrate.api import calibrate
from em_noise.calibrate.combine import calibrate_frames, combine_calibrations
from em_noise.calibrate.common import lam_from_kurtosis, tukey_excess_kurtosis
from em_noise.calibrate.tolerance import SEARCH_RANGES, TOLERANCE, param_value, within_tolerance
from em_noise.params import read_params as load_params
from em_noise.params import write_params as save_params

__all__ = ["SEARCH_RANGES", "TOLERANCE", "calibrate", "calibrate_frames", "combine_calibrations",
           "lam_from_kurtosis", "load_params", "param_value", "save_params", "tukey_excess_kurtosis",
           "within_tolerance"]


class _CallableModule(types.ModuleType):
    """``em_noise.calibrate(image, mode, ...)`` calls :func:`calibrate`."""

    def __call__(self, image, mode, *args, **kwargs):
        return calibrate(image, mode, *args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
