"""Self-tuning by interleaved cross-validation on the user's own tilts (no ground truth needed).

A fold holds out every K-th tilt (offset ``o``: tilts ``o, o+K, o+2K, …`` of the angle-sorted series); each candidate
is fitted on the rest and scored by :func:`denza_gaussian.fit.heldout_score` on the held-out tilts along its run, so
one run gives the score of every stopping step. The candidate and step with the lowest mean score over the folds
win (the winner's stop moved to its latest step within ``cv_stop_tolerance`` of its best score: early stops within
the folds' noise are not taken), and the caller refits on all tilts with them. Optionally (``tv_extend_low``), when
the smallest TV weight of the grid wins, the weight divided by ``tv_extend_factor`` is scored too.

DenZa's folds are fitted coarse (:func:`cv_bin`: tilts mean-binned by ``config.cv_bin``, ~8x less work per fold) and
the choice carried to the full-resolution refit: a TV weight ``λ`` of the full grid is fitted as ``λ / b²`` at bin
``b``, because at bin ``b`` the data terms shrink by ``b²`` against the TV term (internal intensities scale as ``1/b``
and the binned noise as ``1/b``; the mean TV grows as ``b`` and its thickness factor falls as ``1/b``). The folds run
a shorter schedule (``cv_schedule_fraction`` of it; learning-rate decay and densification at the same shares of
it); the stop is carried as the same share of the refit's schedule.
"""
from __future__ import annotations

import numpy as np

from . import classical
from .tiltseries import bin_stack

SIRT_CANDIDATES = (5, 10, 15, 20, 30, 50, 75, 100, 150, 200)


def folds(n_views: int, every: int, n_folds: int) -> list[np.ndarray]:
    """Boolean held-out masks of the interleaved folds (offsets 1, 1 + 1, … of every ``every``-th tilt, so that the
    first and last tilts stay in training and held-out tilts always have training neighbours)."""
    out = []
    for f in range(min(n_folds, every)):
        held = np.zeros(n_views, bool)
        held[1 + f:: every] = True
        held[-1] = False
        if held.any() and (~held).sum() >= 3:
            out.append(held)
    return out


def tune_sirt(tilts: np.ndarray, angles_deg: np.ndarray, thickness: int, every: int = 4, n_folds: int = 1,
              candidates: tuple[int, ...] = SIRT_CANDIDATES) -> tuple[int, dict]:
    """SIRT iteration count by cross-validation: returns (iterations, report with candidates, scores, choice)."""
    from .fit import heldout_score

    masks = folds(len(angles_deg), every, n_folds)
    if not masks:
        return int(candidates[len(candidates) // 2]), {"skipped": "too few views to hold any out"}
    scores = np.zeros(len(candidates))
    for held in masks:
        vols = classical.sirt_iterates(tilts[~held], angles_deg[~held], thickness, tilts.shape[2],
                                       checkpoints=tuple(candidates))
        for i, it in enumerate(candidates):
            scores[i] += heldout_score(classical.forward_project(vols[it], angles_deg[held]), tilts[held]) / len(masks)
    best = int(candidates[int(np.argmin(scores))])
    return best, {"parameter": "iterations", "folds": _fold_report(masks, every), "candidates": list(candidates),
                  "scores": [round(float(s), 6) for s in scores], "chosen": best}


def cv_bin(shape_hw: tuple[int, int], config) -> int:
    """Bin factor of the cross-validation fits: ``config.cv_bin`` when the binned images keep at least
    ``config.cv_min_width`` px on their short side, else 1 (full resolution)."""
    b = int(config.cv_bin)
    return b if b > 1 and min(shape_hw) // b >= config.cv_min_width else 1


def choose(curves: dict[float, np.ndarray], tolerance: float = 0.0) -> tuple[float, int]:
    """(weight, step index) of the lowest held-out score over the curves (one score per evaluated step); with a
    ``tolerance``, the weight stays and its stop moves to the latest step scoring within that fraction of the
    lowest."""
    lam, i0 = min(((lam, int(np.argmin(c))) for lam, c in curves.items()), key=lambda t: curves[t[0]][t[1]])
    c = np.asarray(curves[lam])
    return lam, int(np.flatnonzero(c <= c[i0] * (1.0 + tolerance)).max())


def tune_denza(tilts: np.ndarray, angles_deg: np.ndarray, thickness: int, config, gamma0: np.ndarray | None = None,
               device: str = "cpu", progress: bool = False) -> tuple[object, dict]:
    """``lambda_tv`` (among ``config.tv_candidates``) and the stopping step by cross-validation; returns (the config
    to refit with on all tilts, report with candidates, score curves and the choice)."""
    from .fit import fit

    masks = folds(len(angles_deg), config.cv_fold_every, config.cv_folds)
    if not masks:
        return config, {"skipped": "too few views to hold any out"}
    cands = tuple(config.tv_candidates)
    b = cv_bin(tilts.shape[1:], config)
    tilts_cv = bin_stack(np.asarray(tilts, np.float32), b)
    thick_cv = max(1, int(round(thickness / b)))
    curves: dict[float, np.ndarray] = {}
    steps: list[int] = []
    n_cv = max(1, round(config.cv_schedule_fraction * config.iterations))

    def score(lam: float, label: str) -> None:
        acc = None
        for k, held in enumerate(masks):
            cfg = config.model_copy(update={"lambda_tv": float(lam) / b**2, "stop_at": None, "iterations": n_cv})
            g0 = None if gamma0 is None else gamma0[~held]
            res = fit(tilts_cv[~held], angles_deg[~held], thick_cv, cfg, gamma0=g0, predict_angles_deg=angles_deg[:1],
                      heldout=(tilts_cv[held], angles_deg[held]), device=device, progress=progress,
                      desc=f"tuning λ_TV={lam:g} ({label}, fold {k + 1}/{len(masks)})")
            s = np.array([sc for _, sc in res.heldout_curve])
            steps[:] = [st for st, _ in res.heldout_curve]
            acc = s / len(masks) if acc is None else acc + s / len(masks)
        curves[lam] = acc

    for j, lam in enumerate(cands):
        score(lam, f"{j + 1}/{len(cands)}")
    extended = []
    for _ in range(config.tv_extend_low):  # the smallest weight won: the optimum may lie below the grid
        low = min(curves)
        if choose(curves)[0] != low or low <= 0:
            break
        lam = low / config.tv_extend_factor
        extended.append(float(lam))
        score(lam, "below the grid")
    best_lam, best_i = choose(curves, config.cv_stop_tolerance)
    stop = max(1, min(config.iterations, round(steps[best_i] * config.iterations / n_cv)))  # same share of the run
    if config.refit_schedule == "chosen":  # a whole schedule of the chosen length (its learning rates decay fully)
        chosen = config.model_copy(update={"lambda_tv": float(best_lam), "iterations": stop, "stop_at": None})
    else:  # the tuning schedule, stopped at the chosen step
        chosen = config.model_copy(update={"lambda_tv": float(best_lam), "stop_at": stop})
    report = {
        "parameters": ["lambda_tv", "stop_at"],
        "folds": _fold_report(masks, config.cv_fold_every),
        "bin": b,
        "fitted_as": f"lambda_tv / {b ** 2} on tilts mean-binned {b}x{b}" if b > 1 else "full resolution",
        "candidates": [float(c) for c in cands],
        "extended_below": extended,
        "fold_schedule": f"{n_cv} steps per fold (the stop carried as the same share of the "
                         f"{config.iterations}-step refit)",
        "steps": [int(s) for s in steps],
        "scores": {f"{lam:g}": [round(float(v), 6) for v in c] for lam, c in curves.items()},
        "best_score_per_candidate": {f"{lam:g}": round(float(c.min()), 6) for lam, c in curves.items()},
        "chosen": {"lambda_tv": float(best_lam), "stop_at": stop, "schedule": int(config.iterations)},
        "refit": (f"a whole schedule of {stop} steps" if config.refit_schedule == "chosen"
                  else f"the {config.iterations}-step schedule stopped after {stop} steps"),
    }
    return chosen, report


def _fold_report(masks: list[np.ndarray], every: int) -> dict:
    return {"every": int(every), "count": len(masks), "heldout_per_fold": [int(m.sum()) for m in masks],
            "score": "held-out MSE after one fitted scale per view, relative to the views' mean square"}
