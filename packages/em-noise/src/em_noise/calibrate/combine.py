"""Several frames of one instrument (a movie, a tilt series): calibrate each, combine the estimates."""
from __future__ import annotations

import itertools
import math
from typing import Any

import numpy as np

from em_noise.calibrate.api import calibrate
from em_noise.calibrate.tolerance import TOLERANCE
from em_noise.errors import EMInputError
from em_noise.params import finite_or_none, get_value, parse_params, set_value

MAX_BIRGE_RATIO = 2.0  # frames scattering beyond this many standard errors: the median instead of the weighted mean


def calibrate_frames(frames: Any, mode: str, pixel_size_A: float | None = None, numbers: Any = None,
                     progress: bool = False) -> Any:
    """Calibrate each 2-D frame of ``frames`` (an iterable, e.g. a 3-D stack or a tqdm over it) on one internal
    scale (the first frame's) and combine the estimates with :func:`combine_calibrations`.  An unusable
    frame raises EMInputError naming its number (its index, or the matching entry of ``numbers``: the frames'
    numbers in the file; None: no number).  ``progress``: each frame's fit shows a progress bar."""
    estimates, intensity = [], None
    for i, frame in zip(numbers if numbers is not None else itertools.count(), frames):
        try:
            est = calibrate(frame, mode, pixel_size_A=pixel_size_A, intensity=intensity, progress=progress)
        except EMInputError as err:
            raise EMInputError(err.path, err.problem if i is None else f"frame {i}: {err.problem}") from None
        intensity = est.intensity if intensity is None else intensity
        estimates.append(est)
    return combine_calibrations(estimates)


def combine_calibrations(estimates: list[Any]) -> Any:
    """One params model from the calibrations of several frames of one instrument.

    Per estimated parameter: the inverse-variance weighted mean over the frames that declare it identified
    (combined error ``1 / sqrt(Σ 1/SE²)``, times the Birge ratio ``sqrt(χ² / (n − 1))`` when that exceeds 1), or
    the median when the frames scatter more than ``MAX_BIRGE_RATIO`` times their errors or give none (error from
    the spread over frames).  When no frame identifies it: the median over all frames, with the median of the
    frames' own errors.  A null (e.g. no shot noise resolved) when most frames give null.  A parameter is
    declared unidentified when most frames declare it so (averaging shrinks the noise of an estimate, not the
    model errors behind several criteria).  The errors are statistical: an estimator's bias does not average
    away.  For HRTEM the dose, MTF and white k, b are combined one by one; when most frames leave them
    unidentified they are best guesses.  ``calibration.frame_sd`` gives the spread over frames,
    ``calibration.frames`` their number.  The frames' intensity maps are taken to be the same (the first's kept).
    """
    if not estimates:
        raise ValueError("no calibrations to combine")
    dicts = [e.to_dict() if hasattr(e, "to_dict") else dict(e) for e in estimates]
    mode = dicts[0].get("mode")
    if any(d.get("mode") != mode for d in dicts):
        raise ValueError("calibrations of different modes cannot be combined")
    if len(dicts) == 1:
        return parse_params(dicts[0])
    out = {k: v for k, v in parse_params(dicts[0]).to_dict().items() if k != "calibration"}
    calib = [d.get("calibration") or {} for d in dicts]
    votes: dict[str, int] = {}
    for c in calib:
        for key in c.get("unidentified", []):
            votes[key] = votes.get(key, 0) + 1
    se_out, frame_sd = {}, {}
    keys = _combined_keys(mode, calib)
    for key in keys:
        per = [(_get(d, key), c.get("standard_error", {}).get(key), key in c.get("unidentified", []))
               for d, c in zip(dicts, calib)]
        value, se, sd = _combine_key(per, len(dicts))
        set_value(out, key, value)
        if se is not None:
            se_out[key] = se
        if sd is not None:
            frame_sd[key] = sd
    out["calibration"] = finite_or_none({
        "method": "em_noise.calibrate.combine_calibrations", "frames": len(dicts),
        "image_shape": calib[0].get("image_shape"), "intensity_rule": calib[0].get("intensity_rule"),
        "standard_error": se_out, "frame_sd": frame_sd, "unidentified_in_frames": votes,
        "unidentified": [key for key in keys if 2 * votes.get(key, 0) > len(dicts)]})
    return parse_params(out)


def _combined_keys(mode: str, calib: list[dict]) -> list[str]:
    """The parameters a calibration estimates (the round-trip ones, those with a standard error, dose and MTF);
    the rest (fixed settings such as octaves or read noise) are copied from the first frame."""
    keys = list(TOLERANCE[mode])
    for c in calib:
        keys += [k for k in c.get("standard_error", {}) if k not in keys]
    if mode == "hrtem":
        keys += [k for k in ("dose_e_per_A2", "mtf_sigma_px") if k not in keys]
    return keys


def _get(params: dict, key: str) -> float | None:
    """The value at ``key``, None when missing or not a finite number."""
    try:
        v = get_value(params, key)
    except (KeyError, TypeError, AttributeError):
        return None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _combine_key(per: list[tuple], n: int) -> tuple[float | None, float | None, float | None]:
    """(value, standard error, spread over frames) of one key from (value, error, unidentified) per frame."""
    known = [t for t in per if t[0] is not None]
    if 2 * len(known) < n:  # most frames: null
        return None, None, None
    sd = float(np.std([t[0] for t in known], ddof=1)) if len(known) > 1 else None
    use = [t for t in known if not t[2]]  # frames that identify it
    if use:
        value, se = _combine_values([t[0] for t in use], [t[1] for t in use])
        return value, se, sd
    # none does: the median as a best guess, with a typical frame's own error (not shrunk by averaging)
    own = [float(t[1]) for t in known if t[1] is not None and math.isfinite(t[1])]
    return float(np.median([t[0] for t in known])), (float(np.median(own)) if own else None), sd


def _combine_values(vals: list[float], ses: list[float | None]) -> tuple[float, float | None]:
    """(value, standard error) from per-frame values and errors (see :func:`combine_calibrations`)."""
    v = np.array(vals)
    se = np.array([s if s is not None and math.isfinite(s) else np.nan for s in ses])
    have_se = bool(np.all(np.isfinite(se) & (se > 0)))
    if len(v) == 1:
        return float(v[0]), (float(se[0]) if have_se else None)
    if have_se:
        w = 1.0 / se**2
        mean = float((w * v).sum() / w.sum())
        birge = float((w * (v - mean) ** 2).sum()) / (len(v) - 1)  # ~1 when the frames agree within their errors
        if birge <= MAX_BIRGE_RATIO**2:
            return mean, float(max(1.0, math.sqrt(birge)) / math.sqrt(w.sum()))
    # no errors, or frames far apart beyond them (an error estimate at a fit bound is too small): the median
    spread = 1.2533 * float(v.std(ddof=1)) / math.sqrt(len(v))
    if len(v) == 2:  # two values: half their difference, or their own errors if larger
        spread = max(abs(float(v[1] - v[0])) / 2.0, float(np.sqrt(np.nansum(se**2)) / 2.0))
    return float(np.median(v)), spread
