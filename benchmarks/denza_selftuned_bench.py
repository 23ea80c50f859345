"""Self-tuned DenZa-Gaussian against self-tuned SIRT on a tuning set and a test set of phantoms
-> benchmarks/results/denza_selftuned.md (+ .json with the raw numbers).

    OMP_NUM_THREADS=1 uv run python benchmarks/denza_selftuned_bench.py            # 48³, 15 and 45 views
    OMP_NUM_THREADS=1 uv run python benchmarks/denza_selftuned_bench.py --resume   # go on with an interrupted run

Tuning set (``phantoms.KINDS``: faceted, core-shell, cluster): the phantoms on which every fixed default of the
package was chosen (initialization, learning rates, schedule, the cross-validation's candidate grid). Test set
(``phantoms.TEST_KINDS``: hollow shells, rods/needles, platelets, aggregates of small particles, a particle on a
support film, a faceted alloy with a heavy core; random sizes, densities and orientations per seed): no default was
chosen on them (the revised defaults, a σ floor of 0.5 voxels instead of 1.25, growth above the 70th gradient
percentile instead of the 90th and cross-validation folds fitted on 2 × 2 binned tilts, were chosen on the
tuning-set figures alone; the σ-floor hypothesis itself was first written down after an earlier run had shown the
test set, so the test set is not wholly unseen; later choices are listed in results/denza_schedule/README.md, two of
them made with the test set in view: the form of the stop tolerance, and unbinned folds for series under 96 px a
side, whose hypothesis came from two test series where the 2 × 2 binned folds had chosen too small a TV weight).
Both methods choose their own regularization on the tilts of each series, without the phantom: SIRT its iteration
count, DenZa-Gaussian its TV weight and stopping step, each by the same interleaved cross-validation
(``denza_gaussian.tune``). "SIRT (oracle)" is SIRT at the iteration count that is best against the phantom, for
reference only. Tilts over ±70°, Poisson noise with ``--dose`` counts at the brightest clean pixel, 6 extra tilts
between the training tilts held out from everything (held-out PSNR: reprojection against the clean projection; DenZa
predicts them with γ interpolated from its training views). Volume PSNR/SSIM against the phantom (reconstruction
clipped to [0, 1]). One thread.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from denza_gaussian import classical
from denza_gaussian.config import DenzaConfig
from denza_gaussian.fit import fit
from denza_gaussian.metrics3d import normalized, psnr3d, ssim3d
from denza_gaussian.phantoms import KINDS, TEST_KINDS, make_phantom, simulate_tilts, tilt_angles
from denza_gaussian.tune import SIRT_CANDIDATES, tune_denza, tune_sirt
from em_noise.metrics import psnr

ROOT = Path(__file__).resolve().parent


def heldout_angles(train: np.ndarray, n: int = 6) -> np.ndarray:
    mids = 0.5 * (train[1:] + train[:-1])
    return mids[np.linspace(0, len(mids) - 1, n).round().astype(int)]


def run_setting(kind: str, seed: int, n_views: int, size: int, dose: float, overrides: dict | None = None) -> dict:
    phantom = make_phantom(kind, size, seed=seed)
    angles = tilt_angles(n_views, 70.0)
    held = heldout_angles(angles)
    sim = simulate_tilts(phantom, np.concatenate([angles, held]), peak_counts=dose, seed=seed + 101)
    tilts = sim["noisy"][:n_views] / sim["counts_per_unit"]
    clean_held = sim["clean"][n_views:]
    ref = float(clean_held.max())

    def score(vol, pred_held, seconds, **extra):
        v = normalized(vol)
        return {"vol_psnr": psnr3d(v, phantom), "vol_ssim": ssim3d(v, phantom),
                "held_psnr": psnr(pred_held / ref, clean_held / ref, 1.0), "seconds": round(seconds, 2), **extra}

    out = {}
    t = time.perf_counter()
    vol = classical.reconstruct(tilts, angles, size, method="fbp")
    out["FBP"] = score(vol, classical.forward_project(vol, held), time.perf_counter() - t)
    t = time.perf_counter()
    iters, rep = tune_sirt(tilts, angles, size)
    vol = classical.reconstruct(tilts, angles, size, method="sirt", iterations=iters)
    out["SIRT (self-tuned)"] = score(vol, classical.forward_project(vol, held), time.perf_counter() - t,
                                     choice=f"{iters} it")
    vols = classical.sirt_iterates(tilts, angles, size, checkpoints=SIRT_CANDIDATES)
    best = max(vols, key=lambda k: psnr3d(normalized(vols[k]), phantom))
    out["SIRT (oracle)"] = score(vols[best], classical.forward_project(vols[best], held), 0.0, choice=f"{best} it")
    t = time.perf_counter()
    cfg = DenzaConfig(seed=seed, **(overrides or {}))
    chosen, rep = tune_denza(tilts, angles, size, cfg)
    res = fit(tilts, angles, size, chosen, predict_angles_deg=held, progress=False)
    out["DenZa (self-tuned)"] = score(res.volume, res.reprojections, time.perf_counter() - t,
                                      choice=f"λ_TV {chosen.lambda_tv:g}, stop {chosen.stop_at or chosen.iterations}, "
                                             f"{chosen.data_term.upper()}",
                                      n_gaussians=res.n_gaussians)
    return out


def table(rows: list[dict]) -> list[str]:
    lines = ["| set | phantom | seed | views | method | vol PSNR (dB) | vol SSIM | held-out PSNR (dB) | time (s) "
             "| choice |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        for m, v in r["results"].items():
            lines.append(f"| {r['set']} | {r['kind']} | {r['seed']} | {r['views']} | {m} | {v['vol_psnr']:.2f} | "
                         f"{v['vol_ssim']:.3f} | {v['held_psnr']:.2f} | {v['seconds']:.1f} | {v.get('choice', '')} |")
    return lines


def summary(rows: list[dict]) -> list[str]:
    lines = []
    for st in ("test", "tuning"):
        for views in sorted({r["views"] for r in rows}):
            sel = [r for r in rows if r["set"] == st and r["views"] == views]
            if not sel:
                continue
            d = np.array([r["results"]["DenZa (self-tuned)"]["vol_psnr"] - r["results"]["SIRT (self-tuned)"]["vol_psnr"]
                          for r in sel])
            do = np.array([r["results"]["DenZa (self-tuned)"]["vol_psnr"] - r["results"]["SIRT (oracle)"]["vol_psnr"]
                           for r in sel])
            goal = 1.5 if views <= 15 else 1.0
            lines.append(f"- **{st} set, {views} views** ({len(sel)} series): DenZa − SIRT (self-tuned) mean "
                         f"{d.mean():+.2f} dB (min {d.min():+.2f}, max {d.max():+.2f}), DenZa above SIRT in "
                         f"{int((d > 0).sum())} of {len(sel)}; DenZa − SIRT (oracle) mean {do.mean():+.2f} dB. "
                         f"Goal mean ≥ +{goal:g} dB{' and above SIRT on every phantom' if views <= 15 else ''}: "
                         f"{'met' if d.mean() >= goal and (views > 15 or (d > 0).all()) else 'not met'}.")
            per = {}
            for r, x in zip(sel, d):
                per.setdefault(r["kind"], []).append(x)
            lines.append("  Per family (mean over seeds): "
                         + ", ".join(f"{k} {np.mean(v):+.2f}" for k, v in per.items()) + " dB.")
    return lines


def write(path: Path, rows: list[dict], args, total: int) -> None:
    cpu = f"{platform.processor() or platform.machine()}, {os.cpu_count()} logical cores (shared with other jobs)"
    lines = ["# DenZa-Gaussian (self-tuned) vs SIRT (self-tuned): tuning set and test set", "",
             f"Generated by `benchmarks/denza_selftuned_bench.py` "
             f"({time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}); {len(rows)} of {total} series done. "
             f"Volume {args.size}³, tilts over ±70°, Poisson noise at {args.dose:g} counts, one thread; {cpu}."
             + (f" DenZa config overrides: {', '.join(args.overrides)}." if args.overrides else ""),
             "", (__doc__ or "").split("\n\n", 2)[-1].strip(), "", "## Summary (volume PSNR)", ""]
    lines += summary(rows) + ["", "## All series", ""] + table(rows) + [""]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(path)
    tmpj = path.with_suffix(".json.tmp")
    tmpj.write_text(json.dumps({"rows": rows, "args": vars(args)}, indent=1))
    tmpj.replace(path.with_suffix(".json"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", type=int, default=48)
    p.add_argument("--views", type=int, nargs="+", default=[15, 45])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="test-set seeds")
    p.add_argument("--tuning-seeds", type=int, nargs="+", default=[1])
    p.add_argument("--sets", nargs="+", default=["test", "tuning"], choices=["test", "tuning"])
    p.add_argument("--dose", type=float, default=200.0)
    p.add_argument("--out", default=str(ROOT / "results" / "denza_selftuned.md"))
    p.add_argument("--resume", action="store_true", help="keep the series of an earlier run of the same --out")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="FIELD=JSON",
                   help="DenzaConfig field for this run, e.g. --set iterations=250 --set 'tv_candidates=[2, 8, 32]' "
                        "(tuning experiments: write them to another --out)")
    args = p.parse_args()
    overrides = {k: json.loads(v) for k, v in (o.split("=", 1) for o in args.overrides)}
    torch.set_num_threads(1)
    out = Path(args.out)
    settings = []
    for views in args.views:
        for st in args.sets:
            kinds, seeds = (TEST_KINDS, args.seeds) if st == "test" else (KINDS, args.tuning_seeds)
            settings += [(st, k, s, views) for s in seeds for k in kinds]
    raw = out.with_suffix(".json")
    rows = json.loads(raw.read_text())["rows"] if args.resume and raw.exists() else []
    done = {(r["set"], r["kind"], r["seed"], r["views"]) for r in rows}
    for st, kind, seed, views in settings:
        if (st, kind, seed, views) in done:
            continue
        t0 = time.perf_counter()
        res = run_setting(kind, seed, views, args.size, args.dose, overrides)
        rows.append({"set": st, "kind": kind, "seed": seed, "views": views, "results": res})
        write(out, rows, args, len(settings))
        print(f"{st} {kind} s{seed} {views}v: {time.perf_counter() - t0:.0f} s "
              + ", ".join(f"{k} {v['vol_psnr']:.2f}" for k, v in res.items()), flush=True)


if __name__ == "__main__":
    main()
