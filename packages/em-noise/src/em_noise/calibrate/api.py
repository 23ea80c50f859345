"""``calibrate(image, mode)``: the noise parameters of one image, on a stated internal scale."""
from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from em_noise.calibrate import background, hrtem, stem
from em_noise.calibrate.common import interior
from em_noise.calibrate.scale import Readout, choose_scale, readout
from em_noise.calibrate.tolerance import clip_to_search, too_uncertain
from em_noise.errors import EMInputError
from em_noise.formats.units import length_to_A
from em_noise.params import Intensity, check_mode, default_params, finite_or_none, parse_params, set_value

MIN_SIZE_PX = 32


def calibrate(image: Any, mode: str, pixel_size_A: float | None = None, *, intensity: Intensity | None = None,
              progress: bool = False) -> Any:
    """Noise parameters of one image for ``mode`` 'haadf' | 'bf' | 'hrtem' (an :mod:`em_noise.params` model).

    ``image``: a 2-D numpy array in any units, or a hyperspy ``Signal2D`` (its pixel size read from the axes).
    The fit runs on the models' 0–255 scale: an image already on it as it is, any other mapped affinely onto it
    (or by ``intensity`` if given); ``params.intensity`` reports the map (``image = offset + scale · model``) and
    synthesis from these parameters gives images in the image's own units.  ``pixel_size_A`` (Å/px) lets HRTEM
    shot noise be reported as ``dose_e_per_A2``.  ``calibration.unidentified`` lists the parameters one image does
    not determine to the stated tolerance (their values are best guesses), including any at an end of its search
    range; ``calibration.standard_error`` the jackknife errors.  ``progress``: a progress bar on stderr.
    """
    check_mode(mode)
    x, pixel_size_A = _as_array(image, pixel_size_A)
    if intensity is None:
        intensity, rule = choose_scale(x, mode)
    else:
        rule = "given"
    raw = readout(x)
    frame = model_frame(x, intensity, raw.on_model_scale(intensity))
    with _Progress(progress, 5 if mode != "hrtem" else 3) as bar:
        if mode == "hrtem":
            values, errors, unidentified, diag = hrtem.estimate(frame, pixel_size_A, bar.tick)
        else:
            values, errors, unidentified, diag = stem.estimate(frame, mode, bar.tick)
            bar.tick()
            bg_values, bg_errors = background.estimate(frame.x, mode, frame.usable)
            values.update(bg_values)
            errors.update(bg_errors)
            unidentified += too_uncertain(mode, bg_errors, bg_values)
        bar.tick()
    values, at_limit = clip_to_search(values, "hrtem" if mode == "hrtem" else "stem")
    params = default_params(mode).to_dict()
    for key, value in values.items():
        set_value(params, key, value)
    if mode != "hrtem":  # an 8-bit frame on the model scale: the detector model's clip and truncation
        params["detector"]["quantize"] = bool(intensity.scale == 1.0 and intensity.offset == 0.0 and raw.step == 1.0
                                              and x.min() >= 0 and x.max() <= 255)
    params.update(intensity=intensity.model_dump(), pixel_size_A=pixel_size_A, calibration=finite_or_none({
        "method": "em_noise.calibrate", "image_shape": list(x.shape), "intensity_rule": rule,
        "readout": {"saturation": [raw.low, raw.high], "quantization_step": raw.step},
        "standard_error": errors, "unidentified": list(dict.fromkeys(unidentified + at_limit)),
        "at_search_limit": at_limit, **diag}))
    return parse_params(params)


def model_frame(x: np.ndarray, intensity: Intensity, ro: Readout) -> stem.Frame:
    """The image on the model scale (quantized values taken as truncated: half a step added), its usable pixels
    (interior, away from saturated pixels by the filters' reach) and quantization variance."""
    xm = np.asarray(intensity.to_model(x), dtype=np.float64) + 0.5 * ro.step
    usable = interior(x.shape)
    sat = np.zeros(x.shape, bool)
    if ro.low is not None:
        sat |= xm <= ro.low + 0.5 * ro.step
    if ro.high is not None:
        sat |= xm >= ro.high + 0.5 * ro.step
    if sat.any():
        usable &= ~ndimage.binary_dilation(sat, structure=np.ones((7, 17), bool))
    if usable.mean() < 0.1:  # nearly everything saturated: use what there is rather than nothing
        usable = interior(x.shape) & ~sat
    return stem.Frame(x=xm, usable=usable, quant_var=ro.step**2 / 12.0, clip=(ro.low, ro.high))


def _as_array(image: Any, pixel_size_A: float | None) -> tuple[np.ndarray, float | None]:
    """A checked float64 (H, W) array and the pixel size (Å), from a numpy array or a hyperspy Signal2D."""
    if hasattr(image, "axes_manager") and hasattr(image, "data"):
        if pixel_size_A is None:
            pixel_size_A = _signal_pixel_size(image)
        image = image.data
    x = np.asarray(image, dtype=np.float64)
    if x.ndim != 2:
        raise EMInputError(None, f"calibration needs one 2-D image, got shape {x.shape}")
    if min(x.shape) < MIN_SIZE_PX:
        raise EMInputError(None, f"image of {x.shape[1]}×{x.shape[0]} px is too small to calibrate "
                                 f"(need ≥ {MIN_SIZE_PX} px)")
    if not np.all(np.isfinite(x)):
        raise EMInputError(None, "image contains NaN or infinite values")
    if np.ptp(x) <= 0:
        raise EMInputError(None, "image is constant: no noise to calibrate")
    return x, pixel_size_A


def _signal_pixel_size(signal: Any) -> float | None:
    """Pixel size (Å) of a hyperspy signal's first signal axis, None when its unit is not a length."""
    try:
        axis = signal.axes_manager.signal_axes[0]
        factor = length_to_A(axis.units)
        scale = float(axis.scale)
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return scale * factor if factor is not None and math.isfinite(scale) and scale > 0 else None


class _Progress:
    """A tqdm bar on stderr over the fit's stages (nothing when ``enabled`` is false)."""

    def __init__(self, enabled: bool, total: int):
        self.bar = None
        if enabled:
            from tqdm.auto import tqdm  # noqa: PLC0415

            self.bar = tqdm(total=total, desc="calibrate", unit="stage", leave=False)

    def tick(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def __enter__(self) -> _Progress:
        return self

    def __exit__(self, *exc: Any) -> None:
        if self.bar is not None:
            self.bar.close()
