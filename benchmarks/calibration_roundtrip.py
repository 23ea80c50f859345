"""Calibration round trip through the command line, as a user would run it.

For each mode: ``em-noise synth --mode M --count N --seed S -o DIR`` then ``em-noise calibrate DIR/NNNN_noisy.tif``
for every sample, and each recovered parameter is compared with the true one in ``NNNN.json`` using the
tolerances of :data:`em_noise.calibrate.TOLERANCE` (|error| <= rel·|true| + abs; HRTEM dose: null matches only
null).  A parameter the calibration itself lists in ``calibration.unidentified`` (its criterion never sees the
truth: jackknife standard error above half the tolerance, or a documented regime) is counted apart, not scored.

Identifiability of the acceptance example's hard parameters (BF λ, HRTEM k of sample 0): the same clean image
and true parameters are re-noised ``--draws`` times (new noise draws, fixed seeds) and calibrated, giving the
spread of the estimate that one image allows; for HRTEM k also the Cramér–Rao bound of an oracle handed the
clean image and the MTF (:func:`em_noise.bounds.hrtem_cramer_rao`) with the white and column noise alone, with
the image's shot noise at a known dose, and with the dose unknown (the calibration's case): no unbiased
estimator working from the noisy image can do better.

Stacks: the same sample re-noised as 4 and 16 frames and calibrated with ``calibrate_frames`` (what
``em-noise calibrate`` does with a movie or a series): combined values and standard errors.

Tuning and test data: the estimator was developed on samples 0–7 of seed 1 (``--seed``, the issue's acceptance
example) and on the lattices of tests/em_noise/test_calibrate.py; the round-trip statistics use the samples of
``--test-seed`` (default 3), never looked at during development, for the em-noise recipe and for the SFIN
authors' published STEM distribution (``--recipe sfin-paper``).

    uv run python benchmarks/calibration_roundtrip.py [--count 20] [--seed 1] [--test-seed 3] [--draws 20]
        [--stack-frames 4 16]

Writes ``benchmarks/results/calibration.md``.
"""
from __future__ import annotations

import argparse
import io
import json
import sys
import tempfile
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
from em_noise.bounds import hrtem_cramer_rao
from em_noise.calibrate import TOLERANCE, calibrate, calibrate_frames, param_value, within_tolerance
from em_noise.cli import main as em_noise
from em_noise.noise import apply_noise
from em_noise.synth import SynthConfig, synthesize

RESULTS = Path(__file__).parent / "results" / "calibration.md"


def _fmt(v) -> str:
    return "null" if v is None else f"{v:.4g}"


def run_mode(mode: str, count: int, seed: int, folder: Path, recipe: str = "em-noise"
             ) -> tuple[dict[str, list[bool]], dict[str, list[bool]], list[str]]:
    out = folder / f"{recipe}-{mode}-{seed}"
    if em_noise(["synth", "--mode", mode, "--count", str(count), "--seed", str(seed), "--recipe", recipe,
                 "-o", str(out)]) != 0:
        raise SystemExit(f"synth failed for {mode}")
    hits: dict[str, list[bool]] = {k: [] for k in TOLERANCE[mode]}
    all_hits: dict[str, list[bool]] = {k: [] for k in TOLERANCE[mode]}  # including the declared-unidentified
    rows = []
    for i in range(count):
        true = json.loads((out / f"{i:04d}.json").read_text())["noise_params"]
        buf = io.StringIO()
        with redirect_stdout(buf):
            if em_noise(["calibrate", str(out / f"{i:04d}_noisy.tif"), "--mode", mode]) != 0:
                raise SystemExit(f"calibrate failed on {mode} sample {i}")
        est = json.loads(buf.getvalue())
        unidentified = set(est.get("calibration", {}).get("unidentified", []))
        for key in TOLERANCE[mode]:
            ok = within_tolerance(mode, key, param_value(true, key), param_value(est, key))
            all_hits[key].append(ok)
            if key not in unidentified:
                hits[key].append(ok)
            if i == 0:
                verdict = ("yes" if ok else "no") + (" (declared unidentified)" if key in unidentified else "")
                rows.append(f"| {mode} | {key} | {_fmt(param_value(true, key))} | {_fmt(param_value(est, key))} "
                            f"| {verdict} |")
    return hits, all_hits, rows


def spread_over_draws(mode: str, key: str, seed: int, draws: int) -> str:
    """One table row: sample 0 of ``seed`` re-noised ``draws`` times with its true parameters, then calibrated."""
    s = synthesize(SynthConfig(mode=mode), [seed, 0])  # the sample `em-noise synth --seed S` writes as 0000
    true, pix = s["noise_params"], s["pixel_size_A"]
    t = param_value(true, key)
    rel, ab = TOLERANCE[mode][key]
    half = rel * abs(t) + ab
    est, unid = [], 0
    for r in range(draws):
        noisy = apply_noise(s["clean"], mode, true, np.random.default_rng([seed, 0, 7919, r]), pixel_size_A=pix)
        out = calibrate(noisy, mode, pixel_size_A=pix)
        est.append(param_value(out, key))
        unid += key in out.calibration["unidentified"]
    est = np.array(est, dtype=float)
    within = np.abs(est - t) <= half
    oracle = "–"
    if mode == "hrtem" and key == "pointwise.k":
        no_shot = {**true, "dose_e_per_A2": None}
        bounds = (hrtem_cramer_rao(s["clean"], no_shot, pix), hrtem_cramer_rao(s["clean"], true, pix,
                                                                                 known=("dose_e_per_A2",)),
                  hrtem_cramer_rao(s["clean"], true, pix))
        oracle = " / ".join(_fmt(b[key]) for b in bounds)
    sd_est = float(est.std(ddof=1))
    return (f"| {mode} | {key} | {_fmt(t)} | ±{_fmt(half)} | {_fmt(float(est.mean()))} | {_fmt(sd_est)} "
            f"| {sd_est / half:.2f} | {int(within.sum())}/{draws} | {unid}/{draws} | {oracle} |")


def frames_rows(mode: str, seed: int, counts: tuple[int, ...]) -> list[str]:
    """Sample 0 of ``seed`` re-noised as a stack of N frames (same clean image and parameters), calibrated with
    ``calibrate_frames``: each identified-by-majority parameter's combined value and standard error."""
    s = synthesize(SynthConfig(mode=mode), [seed, 0])
    true, pix = s["noise_params"], s["pixel_size_A"]
    stack = [apply_noise(s["clean"], mode, true, np.random.default_rng([seed, 0, 104729, r]), pixel_size_A=pix)
             for r in range(max(counts))]
    rows = []
    for n in counts:
        est = calibrate_frames(stack[:n], mode, pixel_size_A=pix)
        se, unid = est.calibration["standard_error"], est.calibration["unidentified"]
        cells = []
        for key in TOLERANCE[mode]:
            t, e = param_value(true, key), param_value(est, key)
            mark = "?" if key in unid else ("" if within_tolerance(mode, key, t, e) else " ✗")
            cells.append(f"{key} {_fmt(e)} ± {_fmt(se[key]) if key in se else '–'}{mark}")
        rows.append(f"| {mode} | {n} | " + "; ".join(cells) + " |")
    return rows


def score_table(count: int, seed: int, recipe: str, modes: tuple[str, ...], folder: Path) -> list[str]:
    """Rows of the round-trip table for ``count`` samples of ``seed`` of ``recipe``."""
    lines = ["| mode | parameter | tolerance (rel, abs) | within tolerance | declared unidentified | all samples |",
             "|---|---|---|---|---|---|"]
    for mode in modes:
        hits, all_hits, _ = run_mode(mode, count, seed, folder, recipe)
        for key, h in hits.items():
            rel, ab = TOLERANCE[mode][key]
            a = all_hits[key]
            lines.append(f"| {mode} | {key} | {rel:g}, {ab:g} | {sum(h)}/{len(h)} | {len(a) - len(h)} "
                         f"| {sum(a)}/{len(a)} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=20)
    ap.add_argument("--seed", type=int, default=1, help="seed of the acceptance example (sample 0000)")
    ap.add_argument("--test-seed", type=int, default=3, help="seed of the round-trip test samples")
    ap.add_argument("--draws", type=int, default=20, help="noise draws of sample 0 for the identifiability table")
    ap.add_argument("--stack-frames", type=int, nargs="*", default=[4, 16],
                    help="stack sizes for the combined-frames table (none: skip it)")
    args = ap.parse_args()
    lines = [
        "# Calibration round trip (em-noise synth -> em-noise calibrate)",
        "",
        f"`uv run python benchmarks/calibration_roundtrip.py --count {args.count} --seed {args.seed} "
        f"--test-seed {args.test_seed} --draws {args.draws}` (OMP_NUM_THREADS=1): fraction of samples whose",
        "recovered parameter lies within the stated tolerance of the true one (`em_noise.calibrate.TOLERANCE`).",
        "'within tolerance' counts the samples where the calibration declares the parameter identified;",
        "'declared unidentified' the others (listed in the output's `calibration.unidentified`), and the last",
        "column scores every sample regardless of the declaration.",
        f"Test data: seed {args.test_seed}, not used while developing the estimator (tuned on seed {args.seed}, "
        "samples 0–7, and on the unit tests' lattices).",
        "",
        f"em-noise recipe (`em-noise synth --seed {args.test_seed}`):", "",
    ]
    first: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        lines += score_table(args.count, args.test_seed, "em-noise", ("haadf", "bf", "hrtem"), Path(tmp))
        lines += ["", f"The SFIN authors' published STEM distribution (`em-noise synth --recipe sfin-paper --seed "
                  f"{args.test_seed}`; its BF vacuum is 255, the calibration assumes 245):", ""]
        lines += score_table(args.count, args.test_seed, "sfin-paper", ("haadf", "bf"), Path(tmp))
        for mode in ("haadf", "bf", "hrtem"):
            first += run_mode(mode, 1, args.seed, Path(tmp))[2]
    lines += ["", f"Sample 0000 of seed {args.seed} (the issue's acceptance example; seen while tuning):", "",
              "| mode | parameter | true | recovered | within |", "|---|---|---|---|---|", *first, ""]
    if args.draws > 1:
        lines += [f"Identifiability: sample 0000 of seed {args.seed} re-noised {args.draws} times (same clean image "
                  "and true parameters, new noise), calibrated through the library; the statistics are of the value "
                  "returned (the prior mean where λ falls back). 'sd / half-width' above ~0.5 "
                  "means one image cannot pin the parameter to the tolerance; the Cramér–Rao column is the lowest "
                  "standard error of HRTEM k that any unbiased estimator handed the clean image and the MTF can "
                  "reach (em_noise.bounds): white and column noise only / with this image's shot noise at a known "
                  "dose / dose unknown, as in calibration.", "",
                  "| mode | parameter | true | tolerance | mean returned | sd | sd / half-width | within "
                  "| declared unidentified | Cramér–Rao SE: no shot / dose known / dose unknown |",
                  "|---|---|---|---|---|---|---|---|---|---|",
                  spread_over_draws("bf", "pointwise.lam", args.seed, args.draws),
                  spread_over_draws("hrtem", "pointwise.k", args.seed, args.draws), ""]
    if args.stack_frames:
        counts = tuple(sorted({1, *args.stack_frames}))
        lines += [f"Stacks: sample 0000 of seed {args.seed} re-noised as {max(counts)} frames of one instrument and "
                  "calibrated frame by frame, estimates combined (`em-noise calibrate stack --frames 0:N`, "
                  "em_noise.calibrate.combine_calibrations). Value ± standard error; ✗ outside the tolerance, "
                  "? declared unidentified by most frames.", "",
                  "| mode | frames | combined estimates |", "|---|---|---|"]
        for mode in ("haadf", "bf", "hrtem"):
            lines += frames_rows(mode, args.seed, counts)
        lines.append("")
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
