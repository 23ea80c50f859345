"""The one configuration of a DenZa-Gaussian fit and of its self-tuning (pydantic, validated here only).

Lengths are in voxels of the reconstruction grid (= detector pixels after binning); intensities are on the internal
scale of :func:`denza_gaussian.fit.fit` (the initial SIRT volume has its 99.9th percentile at 1).
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class DenzaConfig(BaseModel):
    """Hyper-parameters of a DenZa-Gaussian fit and of the cross-validation that chooses ``lambda_tv`` and the stop."""

    model_config = ConfigDict(extra="forbid")

    # schedule
    iterations: int = Field(250, ge=1, description="length of the schedule in steps, each over all training views")
    stop_at: int | None = Field(None, ge=1, description="stop after this many steps of the schedule (early stop; "
                                "None: run it all)")
    lr_means: float = Field(0.05, gt=0, description="voxels")
    lr_scales: float = Field(0.01, gt=0, description="log σ")
    lr_quats: float = Field(0.002, gt=0)
    lr_denza: float = Field(0.02, gt=0, description="pre-softplus denza")
    lr_gamma: float = Field(0.005, gt=0)
    lr_final_fraction: float = Field(0.1, gt=0, le=1, description="exponential decay to this fraction of each lr")
    # initialization
    n_init: int | None = Field(None, ge=16, description="initial Gaussians (None: seedable voxels / "
                               "init_voxels_per_gaussian, at least init_min_per_64cubed per 64³ voxels and "
                               "init_min_total in all)")
    init_voxels_per_gaussian: float = Field(40.0, gt=0, description="seedable voxels (above init_threshold) per "
                                            "initial Gaussian")
    init_min_per_64cubed: int = Field(2500, ge=1, description="fewest initial Gaussians per 64³ voxels of the grid")
    init_min_total: int = Field(2500, ge=1, description="fewest initial Gaussians on any grid (binds on grids "
                                "smaller than init_min_total / init_min_per_64cubed × 64³ voxels, where they cost "
                                "less than on the 64³ grid that sets init_min_per_64cubed's time budget)")
    init_sirt_iterations: int = Field(30, ge=1)
    init_threshold: float = Field(0.1, ge=0.0, le=1.0, description="fraction of the SIRT p99.9 for seeding")
    min_scale: float = Field(0.5, gt=0, description="σ bounds in voxels")
    max_scale: float = Field(8.0, gt=0)
    max_radius: int = Field(24, ge=2, description="largest voxelization window half-width (voxels)")
    # loss
    data_term: Literal["l1", "l2"] = Field("l1", description="data misfit of the projections: mean absolute error "
                                           "('l1') or root-mean-square error ('l2', least squares, in the same "
                                           "units as 'l1' so that the other terms' weights keep their scale)")
    lambda_ssim: float = Field(0.2, ge=0.0)
    lambda_fourier: float = Field(0.1, ge=0.0)
    lambda_tv: float = Field(1.0, ge=0.0, description="3-D TV weight, times thickness/64 (0: off)")
    use_gamma: bool = Field(True, description="scattering view normalization γ")
    learn_gamma: bool = Field(True, description="refine γ as a learnable per-view factor")
    lambda_gamma_prior: float = Field(1.0, ge=0.0, description="weight of (log γ_refine)² pulling it to 1")
    # densification, at fixed fractions of the schedule so that every run length refines alike
    densify: bool = True
    densify_start_fraction: float = Field(0.1, ge=0, le=1, description="first refinement at this share of the steps")
    densify_stop_fraction: float = Field(0.6, ge=0, le=1, description="no refinement after this share of the steps")
    densify_rounds: int = Field(5, ge=1, description="refinements between start and stop")
    grow_quantile: float = Field(0.7, gt=0, lt=1, description="Gaussians above this gradient quantile grow")
    grow_scale3d: float = Field(1.5, gt=0, description="σ_max (voxels) below which a Gaussian is cloned, else split")
    prune_denza: float = Field(0.005, ge=0, description="denza below which a Gaussian is pruned")
    prune_scale3d: float = Field(12.0, gt=0, description="σ_max (voxels) above which a Gaussian is pruned")
    max_gaussians: int = Field(40000, ge=16)
    # self-tuning (cross-validation on held-out tilts)
    cv_fold_every: int = Field(4, ge=2, description="hold out every K-th tilt in a cross-validation fold")
    cv_folds: int = Field(1, ge=1, description="interleaved folds (offsets 0..folds-1 of every K-th tilt)")
    tv_candidates: tuple[float, ...] = Field((0.5, 2.0, 8.0), min_length=1,
                                             description="lambda_tv values tried by cross-validation")
    cv_stop_tolerance: float = Field(0.01, ge=0.0, description="move the chosen weight's stop to its latest step "
                                     "whose held-out score is within this fraction of its best (0: the best)")
    refit_schedule: Literal["chosen", "stopped"] = Field(
        "stopped", description="refit on all tilts with a whole schedule of the chosen length ('chosen') or with the "
        "tuning schedule stopped at the chosen step ('stopped')")
    tv_extend_low: int = Field(0, ge=0, description="times the grid is extended below its smallest weight when that "
                               "weight wins (0: never)")
    tv_extend_factor: float = Field(4.0, gt=1, description="each extension divides the smallest weight by this")
    data_term_candidates: tuple[Literal["l1", "l2"], ...] = Field(
        ("l2",), description="data terms other than data_term also tried by cross-validation, each at the TV weight "
        "chosen with data_term (one more fit per fold each); the lowest held-out score wins")
    cv_schedule_fraction: float = Field(0.5, gt=0, le=1, description="the cross-validation folds run this share "
                                        "of the schedule (learning-rate decay and densification compressed alike); "
                                        "the chosen stop is carried as the same share of the refit's schedule")
    cv_eval_every: int = Field(10, ge=1, description="score held-out tilts every this many steps (early stop)")
    cv_parallel: bool = Field(True, description="on the CPU with two or more threads, fit the cross-validation "
                              "candidates two at a time, each on half the threads")
    cv_bin: int = Field(2, ge=1, description="fit the cross-validation folds on tilts mean-binned by this factor "
                        "(coarse-to-fine tuning; 1: full resolution)")
    cv_min_width: int = Field(48, ge=11, description="smallest binned image side (px) for which cv_bin is used")
    seed: int = 0

    @model_validator(mode="after")
    def _check(self) -> DenzaConfig:
        if self.min_scale >= self.max_scale:
            raise ValueError("min_scale must be < max_scale")
        if self.densify_start_fraction > self.densify_stop_fraction:
            raise ValueError("densify_start_fraction must be <= densify_stop_fraction")
        if any(c < 0 for c in self.tv_candidates):
            raise ValueError("tv_candidates must be >= 0")
        return self

    def refine_steps(self, n_steps: int) -> list[int]:
        """Steps after which the Gaussians are densified and pruned: ``densify_rounds`` steps spread evenly from
        ``densify_start_fraction`` to ``densify_stop_fraction`` of the schedule (empty when ``densify`` is off)."""
        if not self.densify or n_steps < 4:
            return []
        lo = max(1, round(self.densify_start_fraction * n_steps))
        hi = max(lo, round(self.densify_stop_fraction * n_steps))
        k = self.densify_rounds
        picks = sorted({round(lo + (hi - lo) * i / max(1, k - 1)) for i in range(k)})
        return [p for p in picks if 0 < p < n_steps]

