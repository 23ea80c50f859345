"""Self-tuning: interleaved folds, cross-validation picks the TV weight that is best against the truth, SIRT alike."""
from __future__ import annotations

import numpy as np
import pytest
from denza_gaussian import classical
from denza_gaussian.config import DenzaConfig
from denza_gaussian.fit import fit
from denza_gaussian.metrics3d import normalized, psnr3d
from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles
from denza_gaussian.tune import folds, tune_denza, tune_sirt


@pytest.fixture(scope="module")
def noisy():
    vol = make_phantom("core_shell", 24, seed=4)
    angles = tilt_angles(13, 65.0)
    sim = simulate_tilts(vol, angles, peak_counts=40.0, seed=2)
    return vol, angles, sim["noisy"] / sim["counts_per_unit"]


def test_folds_interleave_and_keep_the_ends():
    masks = folds(15, 4, 2)
    assert [np.flatnonzero(m).tolist() for m in masks] == [[1, 5, 9, 13], [2, 6, 10]]
    assert folds(4, 4, 1) == [] or all((~m).sum() >= 3 for m in folds(4, 4, 1))


def test_cross_validation_picks_the_tv_weight_that_is_best_against_the_truth(noisy):
    vol, angles, tilts = noisy
    cfg = DenzaConfig(iterations=60, tv_candidates=(0.0, 10.0, 3000.0), cv_eval_every=20)
    truth = {lam: psnr3d(normalized(fit(tilts, angles, 24, cfg.model_copy(update={"lambda_tv": lam}),
                                        progress=False).volume), vol) for lam in cfg.tv_candidates}
    best = max(truth, key=truth.get)
    assert best == 10.0, truth  # the middle weight is the known best on this phantom: noise vs over-smoothing
    chosen, report = tune_denza(tilts, angles, 24, cfg)
    assert chosen.lambda_tv == best, report
    assert report["chosen"]["lambda_tv"] == best and set(report["scores"]) == {"0", "10", "3000"}
    assert chosen.stop_at in [2 * s for s in report["steps"]]  # the folds ran half the schedule


def test_sirt_cross_validation_lands_near_the_oracle(noisy):
    vol, angles, tilts = noisy
    iters, report = tune_sirt(tilts, angles, 24)
    vols = classical.sirt_iterates(tilts, angles, 24, checkpoints=tuple(report["candidates"]))
    scores = {k: psnr3d(normalized(v), vol) for k, v in vols.items()}
    assert scores[iters] > max(scores.values()) - 1.0, (iters, scores)
    assert report["chosen"] == iters and len(report["scores"]) == len(report["candidates"])


def test_folds_are_fitted_binned_only_when_the_binned_tilts_stay_large_enough():
    from denza_gaussian.tune import cv_bin

    cfg = DenzaConfig()
    # thin features (a few px) vanish at bin 2 below ~48 px a side, so small series are tuned at full resolution
    assert cv_bin((96, 96), cfg) == 2 and cv_bin((128, 90), cfg) == 1 and cv_bin((64, 64), cfg) == 1
    assert cv_bin((128, 128), cfg.model_copy(update={"cv_bin": 1})) == 1


def test_binned_cross_validation_reports_its_bin_and_keeps_full_resolution_weights():
    vol = make_phantom("core_shell", 48, seed=4)
    angles = tilt_angles(9, 65.0)
    sim = simulate_tilts(vol, angles, peak_counts=40.0, seed=2)
    cfg = DenzaConfig(iterations=20, cv_schedule_fraction=1.0, tv_candidates=(0.5, 8.0), cv_eval_every=10,
                      cv_min_width=24)
    chosen, report = tune_denza(sim["noisy"] / sim["counts_per_unit"], angles, 48, cfg)
    assert report["bin"] == 2 and "lambda_tv / 4" in report["fitted_as"]
    assert chosen.lambda_tv in (0.5, 8.0) and chosen.stop_at in (10, 20)


def test_the_grid_is_extended_below_when_its_smallest_weight_wins(noisy):
    vol, angles, tilts = noisy
    cfg = DenzaConfig(iterations=60, tv_candidates=(100.0, 1000.0), cv_eval_every=20, tv_extend_low=2)
    chosen, report = tune_denza(tilts, angles, 24, cfg)
    # over-smoothing weights only: the smallest wins, the optimum (10, above) lies below the grid
    assert report["extended_below"][0] == 25.0 and chosen.lambda_tv in report["extended_below"], report
    assert set(report["scores"]) >= {"100", "1000", "25"}
    fixed, rep0 = tune_denza(tilts, angles, 24, cfg.model_copy(update={"tv_extend_low": 0}))
    assert rep0["extended_below"] == [] and fixed.lambda_tv == 100.0


def test_refit_schedule_chosen_runs_a_whole_schedule_of_the_chosen_length(noisy):
    vol, angles, tilts = noisy
    cfg = DenzaConfig(iterations=40, tv_candidates=(10.0,), cv_eval_every=10, refit_schedule="chosen")
    chosen, report = tune_denza(tilts, angles, 24, cfg)
    assert chosen.stop_at is None and chosen.iterations == report["chosen"]["stop_at"]
    assert "whole schedule" in report["refit"]


def test_choice_takes_the_latest_stop_within_the_tolerance():
    from denza_gaussian.tune import choose

    curves = {0.5: np.array([0.30, 0.200, 0.2010, 0.2030]), 2.0: np.array([0.31, 0.25, 0.2030, 0.2005])}
    assert choose(curves) == (0.5, 1)
    assert choose(curves, 0.01) == (0.5, 2)  # 0.2010 is within 1 % of 0.200, 0.2030 is not
    assert choose(curves, 0.05) == (0.5, 3)  # the weight stays: 2.0's later 0.2005 does not take over
    assert choose({1.0: np.array([0.2, 0.3])}, 0.01) == (1.0, 0)


def test_shorter_fold_schedule_carries_the_stop_as_the_same_share_of_the_refit(noisy):
    vol, angles, tilts = noisy
    cfg = DenzaConfig(iterations=40, cv_schedule_fraction=0.5, tv_candidates=(10.0,), cv_eval_every=5,
                      cv_stop_tolerance=0.0)
    chosen, report = tune_denza(tilts, angles, 24, cfg)
    assert report["steps"] == [5, 10, 15, 20] and "20 steps per fold" in report["fold_schedule"]
    best = report["steps"][int(np.argmin(report["scores"]["10"]))]
    assert chosen.iterations == 40 and chosen.stop_at == 2 * best == report["chosen"]["stop_at"]


def test_cross_validation_chooses_the_data_term_with_the_lowest_held_out_score(noisy):
    _, angles, tilts = noisy
    cfg = DenzaConfig(iterations=40, tv_candidates=(0.0, 10.0, 3000.0), cv_eval_every=10, data_term_candidates=("l2",))
    chosen, report = tune_denza(tilts, angles, 24, cfg)
    terms = report["data_terms"]
    assert set(terms) == {"l1", "l2"} and "data_term" in report["parameters"]
    assert chosen.data_term == report["chosen"]["data_term"] == min(terms, key=terms.get)
    # the default term's curve is the one of the chosen weight: its best score is that weight's
    assert terms["l1"] == report["best_score_per_candidate"][f"{chosen.lambda_tv:g}"]
    plain, rep0 = tune_denza(tilts, angles, 24, cfg.model_copy(update={"data_term_candidates": ()}))
    assert plain.data_term == "l1" and "data_terms" not in rep0 and plain.lambda_tv == chosen.lambda_tv


@pytest.mark.parametrize("cands", [(0.0, 10.0, 3000.0), (3000.0, 10000.0, 0.0)])
def test_parallel_folds_choose_exactly_as_one_after_another_on_the_same_threads(noisy, cands):
    import torch

    _, angles, tilts = noisy
    cfg = DenzaConfig(iterations=30, tv_candidates=cands, cv_eval_every=10, data_term_candidates=("l2",))
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        seq, rep_seq = tune_denza(tilts, angles, 24, cfg.model_copy(update={"cv_parallel": False}))
        torch.set_num_threads(2)  # two workers of one thread each
        par, rep_par = tune_denza(tilts, angles, 24, cfg)
        assert torch.get_num_threads() == 2  # restored after the pool
    finally:
        torch.set_num_threads(threads)
    assert rep_par["scores"] == rep_seq["scores"] and rep_par["data_terms"] == rep_seq["data_terms"]
    assert par.model_dump(exclude={"cv_parallel"}) == seq.model_dump(exclude={"cv_parallel"})


def test_a_cancelled_pool_job_stops_its_fit_and_the_pool_restores_the_threads(noisy):
    import threading

    import torch
    from denza_gaussian.fit import FitCancelled
    from denza_gaussian.tune import _Pool

    _, angles, tilts = noisy
    started = threading.Event()

    def long_fit(cancel=None):
        started.set()
        return fit(tilts, angles, 24, DenzaConfig(iterations=100_000), progress=False, cancel=cancel)

    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        with _Pool(2) as pool:
            assert torch.get_num_threads() == 1
            job = pool.submit(long_fit)
            started.wait(30)
            pool.cancel([job])
            with pytest.raises(FitCancelled):
                job.result(timeout=60)
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(threads)
