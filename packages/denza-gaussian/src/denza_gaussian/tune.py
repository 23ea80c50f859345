"""Self-tuning by interleaved cross-validation on the user's own tilts (no ground truth needed).

A fold holds out every K-th tilt (offset ``o``: tilts ``o, o+K, o+2K, …`` of the angle-sorted series); each candidate
is fitted on the rest and scored by :func:`denza_gaussian.fit.heldout_score` on the held-out tilts along its run, so
one run gives the score of every stopping step. The candidate and step with the lowest mean score over the folds
win (the winner's stop moved to its latest step within ``cv_stop_tolerance`` of its best score: early stops within
the folds' noise are not taken), and the caller refits on all tilts with them. Optionally (``tv_extend_low``), when
the smallest TV weight of the grid wins, the weight divided by ``tv_extend_factor`` is scored too; and (when
``data_term_candidates`` lists any) each other data term is scored at the chosen weight, the lowest score winning.

DenZa's folds are fitted coarse (:func:`cv_bin`: tilts mean-binned by ``config.cv_bin``, ~8x less work per fold) and
the choice carried to the full-resolution refit: a TV weight ``λ`` of the full grid is fitted as ``λ / b²`` at bin
``b``, because at bin ``b`` the data terms shrink by ``b²`` against the TV term (internal intensities scale as ``1/b``
and the binned noise as ``1/b``; the mean TV grows as ``b`` and its thickness factor falls as ``1/b``). The folds run
a shorter schedule (``cv_schedule_fraction`` of it; learning-rate decay and densification at the same shares of
it); the stop is carried as the same share of the refit's schedule.

On the CPU with two or more threads (``config.cv_parallel``), the candidates are fitted two at a time, each on half
the threads (one fit uses two cores at ~70 % efficiency, two concurrent fits at ~85 %), largest weight first; while
the last (smallest) TV weight runs, the other data terms are started at the best of the others and kept when that
weight wins. Every fold fit runs on the same number of threads whatever the order, so the choice is deterministic
and the same as when the candidates run one after another on that many threads.
"""
from __future__ import annotations

import threading
from concurrent.futures import Future

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
    steps: list[int] = []
    n_cv = max(1, round(config.cv_schedule_fraction * config.iterations))

    def score(lam: float, label: str, term: str | None = None, cancel=None) -> np.ndarray:
        acc = None
        for k, held in enumerate(masks):
            cfg = config.model_copy(update={"lambda_tv": float(lam) / b**2, "stop_at": None, "iterations": n_cv,
                                            "data_term": term or config.data_term})
            g0 = None if gamma0 is None else gamma0[~held]
            res = fit(tilts_cv[~held], angles_deg[~held], thick_cv, cfg, gamma0=g0, predict_angles_deg=angles_deg[:1],
                      heldout=(tilts_cv[held], angles_deg[held]), device=device, progress=progress,
                      desc=f"tuning λ_TV={lam:g} ({label}, fold {k + 1}/{len(masks)})", cancel=cancel)
            s = np.array([sc for _, sc in res.heldout_curve])
            steps[:] = [st for st, _ in res.heldout_curve]
            acc = s / len(masks) if acc is None else acc + s / len(masks)
        return acc

    others = [t for t in dict.fromkeys(config.data_term_candidates) if t != config.data_term]
    with _Pool(cv_workers(config, device)) as pool:
        order = sorted(cands, reverse=True)  # the largest weights first: they win more often than the smallest
        jobs = {lam: pool.submit(score, lam, f"{j + 1}/{len(cands)}") for j, lam in enumerate(order)}
        early: tuple[float, dict[str, Future]] | None = None
        if others and pool.workers > 1 and len(cands) > 2:  # start the data terms while the last weights run
            first = {lam: jobs[lam].result() for lam in order[:-1]}
            lam0 = choose(first)[0]
            early = lam0, {t: pool.submit(score, lam0, f"data term {t}", t) for t in others}
        curves = {lam: jobs[lam].result() for lam in cands}
        extended = []
        for _ in range(config.tv_extend_low):  # the smallest weight won: the optimum may lie below the grid
            low = min(curves)
            if choose(curves)[0] != low or low <= 0:
                break
            lam = low / config.tv_extend_factor
            extended.append(float(lam))
            curves[lam] = pool.submit(score, lam, "below the grid").result()
        best_lam, best_i = choose(curves, config.cv_stop_tolerance)
        if early is not None and early[0] != best_lam:
            pool.cancel(early[1].values())
            early = None
        pending = early[1] if early else {t: pool.submit(score, best_lam, f"data term {t}", t) for t in others}
        terms = {config.data_term: curves[best_lam]} | {t: f.result() for t, f in pending.items()}
    best_term, best_i = choose(terms, config.cv_stop_tolerance)
    stop = max(1, min(config.iterations, round(steps[best_i] * config.iterations / n_cv)))  # same share of the run
    update = {"lambda_tv": float(best_lam), "data_term": best_term}
    if config.refit_schedule == "chosen":  # a whole schedule of the chosen length (its learning rates decay fully)
        chosen = config.model_copy(update=update | {"iterations": stop, "stop_at": None})
    else:  # the tuning schedule, stopped at the chosen step
        chosen = config.model_copy(update=update | {"stop_at": stop})
    report = {
        "parameters": ["lambda_tv", "stop_at"] + (["data_term"] if len(terms) > 1 else []),
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
        **({"data_terms": {t: round(float(c.min()), 6) for t, c in terms.items()}} if len(terms) > 1 else {}),
        "chosen": {"lambda_tv": float(best_lam), "stop_at": stop, "schedule": int(config.iterations)}
        | ({"data_term": best_term} if len(terms) > 1 else {}),
        "refit": (f"a whole schedule of {stop} steps" if config.refit_schedule == "chosen"
                  else f"the {config.iterations}-step schedule stopped after {stop} steps"),
    }
    return chosen, report


def cv_workers(config, device) -> int:
    """Candidates fitted at once: 2 on the CPU with ``config.cv_parallel`` and at least two threads, else 1."""
    import torch

    return 2 if config.cv_parallel and str(device) == "cpu" and torch.get_num_threads() >= 2 else 1


class _Pool:
    """Runs ``fn(*args, cancel=event)`` jobs on ``workers`` daemon threads (one thread: in the caller, at once),
    PyTorch on ``threads // workers`` threads meanwhile; leaving the block (also on an error or Ctrl-C) cancels the
    jobs still running, waits for them (one fit step) and restores the thread count."""

    def __init__(self, workers: int):
        import queue

        self.workers = int(workers)
        self._queue: queue.Queue = queue.Queue()
        self._threads: list[threading.Thread] = []
        self._events: list[tuple[Future, threading.Event]] = []

    def __enter__(self) -> _Pool:
        import torch

        self._torch_threads = torch.get_num_threads()
        if self.workers > 1:
            torch.set_num_threads(max(1, self._torch_threads // self.workers))
            self._threads = [threading.Thread(target=self._work, daemon=True) for _ in range(self.workers)]
            for t in self._threads:
                t.start()
        return self

    def __exit__(self, *exc) -> None:
        import torch

        self.cancel(f for f, _ in self._events)
        for _ in self._threads:
            self._queue.put(None)
        for t in self._threads:
            t.join()
        torch.set_num_threads(self._torch_threads)

    def _work(self) -> None:
        while (item := self._queue.get()) is not None:
            self._run(*item)

    @staticmethod
    def _run(fut: Future, event: threading.Event, fn, args) -> None:
        if event.is_set() or not fut.set_running_or_notify_cancel():
            return
        try:
            fut.set_result(fn(*args, cancel=event))
        except BaseException as e:  # noqa: BLE001 (handed to the caller by result())
            fut.set_exception(e)

    def submit(self, fn, *args) -> Future:
        fut, event = Future(), threading.Event()
        self._events.append((fut, event))
        if self.workers > 1:
            self._queue.put((fut, event, fn, args))
        else:
            self._run(fut, event, fn, args)
        return fut

    def cancel(self, futures) -> None:
        """Stop these jobs (a running fit at its next step; a queued one never starts)."""
        futures = set(futures)
        for fut, event in self._events:
            if fut in futures:
                event.set()
                fut.cancel()


def _fold_report(masks: list[np.ndarray], every: int) -> dict:
    return {"every": int(every), "count": len(masks), "heldout_per_fold": [int(m.sum()) for m in masks],
            "score": "held-out MSE after one fitted scale per view, relative to the views' mean square"}
