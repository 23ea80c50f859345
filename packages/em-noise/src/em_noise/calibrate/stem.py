"""STEM (HAADF/BF) estimator: Tukey-lambda pointwise noise and gradient-dependent scan noise from one image.

Works on a :class:`Frame` (the image on the model's 0–255 scale, the usable pixels, the read-out's quantization
variance and clip levels).  The derivation of every step is in ``docs/calibration.md``.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
from scipy import ndimage, optimize

from em_noise import noise as nz
from em_noise.calibrate import common as cm
from em_noise.calibrate.stem_maps import blend_weight, scan_maps, smooth_gradient, wiener_gradient
from em_noise.calibrate.tolerance import too_uncertain
from em_noise.priors import STEM_DRAWS

SCAN_ROW_SIGMA_PX = 2.0
MIN_POINTWISE_SHARE = 0.7  # below this share of the residual variance the pointwise part is not identified
PW_R_SPAN = 0.1  # pointwise fit: pixels whose scan blend weight r varies less than this along the row filter
PW_MIN_STEADY = 0.25  # ... if at least this share of the usable pixels qualifies (else all of them)
LOW_LEAK = 0.05  # from round 2: pixels whose modelled scan leak is under this share of their pointwise part
LOW_LEAK_MIN_PX = 0.1  # ... if at least this share qualifies (else the steady pixels, λ unidentified)
MAX_MIX_SHARE = 0.03  # λ: above this share of the 4th moment from the scan-driven scale mixture, unidentified
FIRST_PASS_PX = 256  # the first pass (noise level for the Wiener filter) runs on a central crop of this size
CLIP_MARGIN_SD = 3.0  # pixels whose local intensity is this many noise sds from a clip level are left out
MIN_UNCLIPPED = 0.25  # ... if this share of the usable pixels remains
N_ITER = 3
SCAN_K_SCALE = 4.0 * nz.SCAN_K_AT_G_MAX  # std(80) − std(0) = 160 k


@dataclass
class Frame:
    """An image on the model's 0–255 scale and what its read-out adds."""

    x: np.ndarray  # quantization offset (half a step, for truncation) already removed
    usable: np.ndarray  # interior pixels away from saturated ones
    quant_var: float = 0.0  # Δ² / 12 of the quantization step Δ (model units²)
    clip: tuple[float | None, float | None] = (None, None)  # saturation levels (model units)


@dataclass
class _Maps:
    """Filtered images and model maps of one pass (fixed blend weight ``r``)."""

    a: np.ndarray
    cp: float
    p: np.ndarray  # pointwise residual: image minus its row smoothing
    guide: np.ndarray  # intensity guide from the other rows
    s: np.ndarray  # scan statistic: row blur, then column high-pass
    wk: np.ndarray
    c: np.ndarray
    base: np.ndarray  # pointwise-fit pixels: usable, r steady along the row filter
    u: tuple[np.ndarray, np.ndarray]  # scan variance left in p per unit s0², s80²
    v: tuple[np.ndarray, np.ndarray]  # ... in s
    vs: tuple[np.ndarray, np.ndarray]  # ... of the scan noise itself
    lab_g: np.ndarray
    n_g: int


@dataclass
class _State:
    """The fit so far: pointwise sd line ``K I + B`` (Tukey scale times std), scan knot variances."""

    lab_i: np.ndarray
    n_i: int
    low_px: float
    K: float = 0.0
    B: float = 0.0
    s02: float = 0.0
    s802: float = 0.0
    extra: np.ndarray | float = 0.0  # white variance beyond (K I + B)²: quantization + K² Var(scan)
    var_pw: np.ndarray | None = None
    leak: np.ndarray | None = None


def estimate(frame: Frame, mode: str, tick: Callable[[], None] = lambda: None) -> tuple[dict, dict, list, dict]:
    """(values, standard errors, unidentified keys, diagnostics) of the STEM scan and pointwise parameters.

    Two passes: the first (central crop) takes g from the image blurred by σ 2 px, which flattens sharp columns;
    the second from a Wiener estimate of the signal built with the first pass's noise model."""
    crop = _crop(frame)
    first, _, _ = _pass(crop, blend_weight(smooth_gradient(crop.x)))
    tick()
    sds = (math.sqrt(first.s02), math.sqrt(first.s802))
    r = blend_weight(wiener_gradient(frame.x, (first.K, first.B), sds, blend_weight(smooth_gradient(frame.x)),
                                     frame.quant_var))
    tick()
    st, maps, frame = _pass(frame, r, clip_aware=True)
    tick()
    return _results(frame, mode, maps, st)


def _crop(frame: Frame) -> Frame:
    h, w = frame.x.shape
    y0, x0 = max(0, (h - FIRST_PASS_PX) // 2), max(0, (w - FIRST_PASS_PX) // 2)
    sl = (slice(y0, y0 + FIRST_PASS_PX), slice(x0, x0 + FIRST_PASS_PX))
    x = frame.x[sl]
    return replace(frame, x=x, usable=frame.usable[sl] & cm.interior(x.shape))


def _away_from_clip(frame: Frame, st: _State, r: np.ndarray) -> np.ndarray:
    """Leave out pixels whose local intensity lies within ``CLIP_MARGIN_SD`` noise sds (pointwise and scan, the
    latter blended by ``r``) of a clip level — their unclipped neighbours are a truncated sample — with the
    filters' reach around them."""
    lo, hi = frame.clip
    local = ndimage.gaussian_filter(frame.x, 1.5, mode="reflect")
    scan_var = (1.0 - r) ** 2 * st.s02 + r**2 * st.s802
    sd = np.sqrt(np.maximum(st.K * local + st.B, 0.0) ** 2 + scan_var + frame.quant_var)
    near = np.zeros(frame.x.shape, bool)
    if hi is not None:
        near |= local + CLIP_MARGIN_SD * sd >= hi
    if lo is not None:
        near |= local - CLIP_MARGIN_SD * sd <= lo
    near = ndimage.binary_dilation(near, structure=np.ones((7, 17), bool))
    return frame.usable & ~near


# ----------------------------------------------------------------------------------------------- one pass
def _pass(frame: Frame, r: np.ndarray, n_iter: int = N_ITER, clip_aware: bool = False
          ) -> tuple[_State, _Maps, Frame]:
    """Alternate the pointwise and scan fits ``n_iter`` times with the blend weight ``r``.  ``clip_aware``:
    after the first round, pixels near a clip level under that round's model are left out (if enough remain)."""
    maps = _maps(frame, r)
    st = _new_state(frame, maps)
    for it in range(n_iter):
        if it > 0:
            _low_leak_groups(frame, maps, st)
        _fit_pointwise(frame, maps, st)
        _fit_scan(maps, st)
        if it == 0 and clip_aware and frame.clip != (None, None):
            usable = _away_from_clip(frame, st, r)
            if usable.sum() >= MIN_UNCLIPPED * frame.usable.sum():
                frame = replace(frame, usable=usable)
                maps = _maps(frame, r)
    return st, maps, frame


def _new_state(frame: Frame, maps: _Maps) -> _State:
    lab_i, n_i = cm.groups(maps.guide, maps.base)
    return _State(lab_i, n_i, low_px=float(maps.base.sum() / max(frame.usable.sum(), 1)))


def _maps(frame: Frame, r: np.ndarray) -> _Maps:
    x = frame.x
    a = cm.highpass(cm.SG7)
    row = ndimage.correlate1d(x, cm.SG7, axis=1, mode="reflect")
    guide = ndimage.correlate1d(row, cm.gauss_kernel(2.0, exclude_centre=True), axis=0, mode="reflect")
    wk, c = cm.gauss_kernel(SCAN_ROW_SIGMA_PX), cm.highpass(cm.SG5)
    s = ndimage.correlate1d(ndimage.correlate1d(x, wk, axis=1, mode="reflect"), c, axis=0, mode="reflect")
    # where r changes within the row filter's reach the scan blend is no longer a smooth spline and leaks into
    # the pointwise residual in proportion to s80²: the pointwise fit uses the pixels with a steady r
    reach = len(a)
    span = (ndimage.maximum_filter1d(r, reach, axis=1, mode="nearest")
            - ndimage.minimum_filter1d(r, reach, axis=1, mode="nearest"))
    steady = frame.usable & (span < PW_R_SPAN)
    base = steady if steady.sum() >= PW_MIN_STEADY * frame.usable.sum() else frame.usable
    lab_g, n_g = cm.groups(smooth_gradient(x), frame.usable)
    return _Maps(a=a, cp=float((a**2).sum()), p=x - row, guide=guide, s=s, wk=wk, c=c, base=base,
                 u=scan_maps(r, a, None), v=scan_maps(r, wk, c**2), vs=scan_maps(r, None, None),
                 lab_g=lab_g, n_g=n_g)


def _scan_left(maps_uv: tuple[np.ndarray, np.ndarray], st: _State) -> np.ndarray:
    return st.s02 * maps_uv[0] + st.s802 * maps_uv[1]


def _fit_pointwise(frame: Frame, maps: _Maps, st: _State) -> None:
    """Fit ``sd = K I + B`` to the group variances of the pointwise residual, after the modelled scan leak, the
    quantization variance and the scan noise's share of the post-scan scale (``K² Var(scan)``) are removed."""
    st.extra = frame.quant_var + st.K**2 * _scan_left(maps.vs, st)
    y = maps.p**2 - _scan_left(maps.u, st) - maps.cp * st.extra
    cnt, i_mean, m2 = cm.group_means(st.lab_i, st.n_i, frame.x, y)
    ok = cnt > cm.MIN_FIT_PX
    st.K, st.B = cm.fit_sd_line(i_mean[ok], m2[ok], cnt[ok], maps.cp)
    st.var_pw = np.maximum(st.K * maps.guide + st.B, 0.0) ** 2 + st.extra


def _fit_scan(maps: _Maps, st: _State) -> None:
    """Non-negative least squares of the scan statistic's group variances (pointwise leak removed) on the exact
    filtered scan variances per unit s0², s80²."""
    st.leak = ndimage.correlate1d(ndimage.correlate1d(st.var_pw, maps.wk**2, axis=1, mode="reflect"), maps.c**2,
                                  axis=0, mode="reflect")
    cnt, zm, a0, a1 = cm.group_means(maps.lab_g, maps.n_g, maps.s**2 - st.leak, *maps.v)
    ok = cnt > cm.MIN_FIT_PX
    wt = np.sqrt(cnt[ok])
    (st.s02, st.s802), _ = optimize.nnls(np.vstack([a0[ok], a1[ok]]).T * wt[:, None], zm[ok] * wt)


def _low_leak_groups(frame: Frame, maps: _Maps, st: _State) -> None:
    """Regroup the pointwise fit on the pixels whose modelled scan leak is under ``LOW_LEAK`` of their pointwise
    part (row windows inside one spline piece): the leak's model error, through r, then hardly enters."""
    v_pw = ndimage.correlate1d(st.var_pw, maps.a**2, axis=1, mode="reflect")
    low = maps.base & (_scan_left(maps.u, st) <= LOW_LEAK * v_pw)
    st.low_px = float(low.sum() / max(frame.usable.sum(), 1))
    st.lab_i, st.n_i = cm.groups(maps.guide, low if st.low_px >= LOW_LEAK_MIN_PX else maps.base)


# --------------------------------------------------------------------------------------- errors and shape
def _refit(si: np.ndarray, sg: np.ndarray, cp: float) -> tuple[float, float, float, float, float]:
    """(K, B, s0, s80, unbounded s0²) from group sums of one jackknife replicate."""
    ok = si[0] > cm.MIN_FIT_PX
    k, b = cm.fit_sd_line(si[1][ok] / si[0][ok], si[2][ok] / si[0][ok], si[0][ok], cp)
    okg = sg[0] > cm.MIN_FIT_PX
    wt = np.sqrt(sg[0][okg])
    cols = np.vstack([sg[2][okg], sg[3][okg]]).T / sg[0][okg][:, None]
    rhs = sg[1][okg] / sg[0][okg] * wt
    (s02, s802), _ = optimize.nnls(cols * wt[:, None], rhs)
    free = float(np.linalg.lstsq(cols * wt[:, None], rhs, rcond=None)[0][0])
    return k, b, math.sqrt(s02), math.sqrt(s802), free


def _jackknife(frame: Frame, maps: _Maps, st: _State, blocks: np.ndarray) -> dict[str, float]:
    """Delete-one-block standard errors of K, B, s0, s80 and scan k (leak and pointwise model held)."""
    y = maps.p**2 - _scan_left(maps.u, st) - maps.cp * st.extra
    si = cm.block_sums(st.lab_i, st.n_i, blocks, frame.x, y)
    sg = cm.block_sums(maps.lab_g, maps.n_g, blocks, maps.s**2 - st.leak, *maps.v)
    reps = np.array([_refit(a, b, maps.cp) for a, b in zip(cm.leave_one_out(si), cm.leave_one_out(sg))])
    se = dict(zip(("K", "B", "s0", "s80"), cm.jackknife_se(reps[:, :4])))
    if st.s02 <= 0.0:
        # s0 at its bound 0: the replicates sit there too; s0 is only known to be below about the standard
        # error of the unbounded s0², taken as a scale
        se["s0"] = math.sqrt(float(cm.jackknife_se(reps[:, 4])[0]))
    se["scan.k"] = float(cm.jackknife_se((reps[:, 3] - reps[:, 2]) / SCAN_K_SCALE)[0])
    return se


def _kurtosis_from_means(cnt, m2, m4, v1, v2, q1) -> float:
    ok = cnt > cm.MIN_FIT_PX
    if not ok.any():
        return math.nan
    kappa = (m4[ok] / m2[ok] ** 2 - 3.0 * v2[ok] / v1[ok] ** 2) / (q1[ok] / v1[ok] ** 2)
    return float(np.sum(cnt[ok] * kappa) / np.sum(cnt[ok]))


def _shape(frame: Frame, mode: str, maps: _Maps, st: _State, blocks: np.ndarray) -> dict:
    """Tukey λ from the excess kurtosis of the pointwise residual (self-normalized within groups), its jackknife
    error, and the pointwise share of the modelled residual variance (over all steady pixels).

    Per pixel ``E[p²] = v`` and ``E[p⁴] = 3 (v² + mix) + κ q``: the pointwise scale ``μ + K S`` follows the scan
    noise S (smooth along the row, so common to the filter window), a Gaussian scale mixture that adds
    ``mix = 4 K² Var(S) (Σ a² μ)² + 2 K⁴ Var(S)² (Σ a²)²``, and ``q = Σ a⁴ E[(μ + K S)⁴]``."""
    a2 = maps.a**2
    mu = np.maximum(st.K * maps.guide + st.B, 0.0)
    k2vs = st.K**2 * _scan_left(maps.vs, st)
    v_pw = ndimage.correlate1d(st.var_pw, a2, axis=1, mode="reflect")
    v = v_pw + _scan_left(maps.u, st)
    m1 = ndimage.correlate1d(mu, a2, axis=1, mode="reflect")
    mix = 4.0 * k2vs * m1**2 + 2.0 * k2vs**2 * maps.cp**2
    q = ndimage.correlate1d(mu**4 + 6.0 * mu**2 * k2vs + 3.0 * k2vs**2, maps.a**4, axis=1, mode="reflect")
    arrays = (maps.p**2, maps.p**4, v, v**2 + mix, q)
    kurt = _kurtosis_from_means(*cm.group_means(st.lab_i, st.n_i, *arrays))
    sums = cm.block_sums(st.lab_i, st.n_i, blocks, *arrays)
    reps = [_kurtosis_from_means(s[0], *(s[1:] / np.maximum(s[0], 1))) for s in cm.leave_one_out(sums)]
    pw_share = float(np.mean(v_pw[maps.base]) / np.mean(v[maps.base]))
    mix_share = float(np.mean(mix[maps.base]) / np.mean(v[maps.base] ** 2))
    kurt_range = cm.tukey_kurtosis_table()[1]
    ok = (pw_share >= MIN_POINTWISE_SHARE and st.low_px >= LOW_LEAK_MIN_PX and mix_share <= MAX_MIX_SHARE
          and kurt_range.min() - 0.3 <= kurt <= kurt_range.max())
    lam = cm.lam_from_kurtosis(kurt) if ok else STEM_DRAWS[mode][1]["lam"][0]
    se = float(cm.jackknife_se([cm.lam_from_kurtosis(k) for k in reps])[0]) if ok else math.nan
    return {"lam": lam, "se": se, "ok": bool(ok), "kurtosis": kurt, "pw_share": pw_share, "mix_share": mix_share}


def _results(frame: Frame, mode: str, maps: _Maps, st: _State) -> tuple[dict, dict, list, dict]:
    blocks = cm.row_blocks(frame.x.shape)
    se = _jackknife(frame, maps, st, blocks)
    shape = _shape(frame, mode, maps, st, blocks)
    lam, T = shape["lam"], nz.tukey_std(shape["lam"])
    s0, s80 = math.sqrt(st.s02), math.sqrt(st.s802)
    values = {"scan.k": (s80 - s0) / SCAN_K_SCALE, "scan.b": (s0 + 13.6) / 4.0,
              "pointwise.k": st.K / T, "pointwise.b": st.B / T, "pointwise.lam": lam}
    # k = K / T(λ), b = B / T(λ): λ's uncertainty (its jackknife error, or the prior sd when λ falls back to the
    # prior mean) enters through T
    rel_t = abs(_dlog_tukey_std(lam)) * (shape["se"] if shape["ok"] else STEM_DRAWS[mode][1]["lam"][1])
    errors = {"pointwise.k": math.hypot(se["K"] / T, abs(st.K / T) * rel_t),
              "pointwise.b": math.hypot(se["B"] / T, abs(st.B / T) * rel_t),
              "scan.k": se["scan.k"], "scan.b": se["s0"] / 4.0, "pointwise.lam": shape["se"]}
    unidentified = too_uncertain(mode, errors, values)
    if s80 <= 2.0 * se["s80"]:
        unidentified.append("scan.k")  # std(80) is 0 for every k ≤ −s0/160: only an upper bound of k is known
    if shape["pw_share"] < MIN_POINTWISE_SHARE:
        # the pointwise part is then the difference of P² and a modelled scan leak whose error (through r, not
        # seen by the jackknife) is of its own size; k, b in λ's scale convention are not identified
        unidentified += ["pointwise.k", "pointwise.b"]
    if not shape["ok"]:
        unidentified.append("pointwise.lam")
    diag = {"scan_std_g0": s0, "scan_std_g80": s80, "pointwise_excess_kurtosis": shape["kurtosis"],
            "pointwise_sd_fit": [st.K, st.B], "pointwise_variance_share": shape["pw_share"],
            "scale_mixture_share": shape["mix_share"],
            "low_leak_pixel_share": st.low_px, "lam_identifiable": shape["ok"],
            "usable_pixel_share": float(frame.usable.mean())}
    return values, errors, list(dict.fromkeys(unidentified)), diag


def _dlog_tukey_std(lam: float, h: float = 0.01) -> float:
    lo, hi = max(lam - h, cm.LAM_RANGE[0]), min(lam + h, cm.LAM_RANGE[1])
    return (math.log(nz.tukey_std(hi)) - math.log(nz.tukey_std(lo))) / (hi - lo)
