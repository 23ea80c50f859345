"""Time em_noise.synth: ms per synthetic (noisy, targets) pair, one CPU thread.

Measures ``synthesize`` (structure + clean image + targets + noise) and a ``PairDataset`` item (adds the robust
normalization and tensor conversion) per mode, plus the worst structure kind, and writes
``benchmarks/results/synth_speed.md``.

Example:
    OMP_NUM_THREADS=1 uv run python benchmarks/synth_speed.py --size 256 --repeats 60
"""
from __future__ import annotations

import argparse
import os
import platform
import time
from pathlib import Path

import numpy as np
import torch
from em_noise.synth import STRUCTURE_KINDS, PairDataset, SynthConfig, synthesize


def _time(fn, n: int) -> np.ndarray:
    fn(10_000)  # warm-up (imports, caches)
    out = []
    for i in range(n):
        t = time.perf_counter()
        fn(i)
        out.append(1e3 * (time.perf_counter() - t))
    return np.asarray(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=256, help="image side (px)")
    ap.add_argument("--repeats", type=int, default=60, help="samples per row (different seeds)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "synth_speed.md")
    args = ap.parse_args()
    torch.set_num_threads(1)
    load_before = os.getloadavg()[0]

    rows = []
    for mode in ("haadf", "bf", "hrtem"):
        cfg = SynthConfig(mode=mode, size=args.size)
        t_syn = _time(lambda i, c=cfg: synthesize(c, [1, i]), args.repeats)
        target = "denoise" if mode == "hrtem" else "enhance"
        ds = PairDataset(cfg, length=20_000, seed=2, target=target)
        t_ds = _time(lambda i, d=ds: d[i], args.repeats)
        per_kind = {}
        for kind in STRUCTURE_KINDS:
            kc = SynthConfig(mode=mode, size=args.size, structures={kind: 1.0})
            per_kind[kind] = float(np.median(_time(lambda i, c=kc: synthesize(c, [3, i]), max(args.repeats // 3, 5))))
        rows.append((mode, t_syn, t_ds, per_kind))

    lines = [
        f"# Synthetic pair speed ({args.size}² px, one thread)",
        "",
        "Command: `OMP_NUM_THREADS=1 uv run python benchmarks/synth_speed.py "
        f"--size {args.size} --repeats {args.repeats}`  ",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical CPUs, "
        f"torch.set_num_threads(1), numpy {np.__version__}, torch {torch.__version__}; 1-min load average "
        f"{load_before:.1f} before / {os.getloadavg()[0]:.1f} after (shared machine: timings include contention).",
        "",
        "Each sample draws a new structure (default mix of regular / disordered / random / nucleation), renders",
        "the clean image, enhancement target and atom map, draws and applies full noise (em_noise.noise).",
        "`PairDataset` adds the robust normalization and tensor conversion. Budget: 50 ms per 256² HAADF pair.",
        "",
        "| mode | synthesize median (ms) | p90 (ms) | max (ms) | PairDataset item median (ms) | "
        + " | ".join(f"{k} median (ms)" for k in STRUCTURE_KINDS) + " |",
        "|---|---|---|---|---|" + "---|" * len(STRUCTURE_KINDS),
    ]
    for mode, t_syn, t_ds, per_kind in rows:
        lines.append(f"| {mode} | {np.median(t_syn):.1f} | {np.percentile(t_syn, 90):.1f} | {t_syn.max():.1f} | "
                     f"{np.median(t_ds):.1f} | " + " | ".join(f"{per_kind[k]:.1f}" for k in STRUCTURE_KINDS) + " |")
    text = "\n".join(lines) + "\n"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".md.tmp")
    tmp.write_text(text)
    tmp.replace(args.out)
    print(text)


if __name__ == "__main__":
    main()
