"""Choosing scgn-denoise --atoms' detection defaults on tuning frames -> benchmarks/results/scgn_detection.md.

    OMP_NUM_THREADS=1 uv run python benchmarks/scgn_detection.py            # the shipped hrtem
    OMP_NUM_THREADS=1 uv run python benchmarks/scgn_detection.py --model runs/.../last.ckpt

Tuning frames only (never the test sets of benchmarks/scgn_bench.py or the tests): scgn_bench's tuning seeds
([VAL_SEED + dose, i], 16 nucleation frames at each of 20, 200 and 2000 e/Å², 16 default frames at [VAL_SEED, i])
and lattice-free frames (em_noise.controls: vacuum, amorphous film, interference fringes at 200 / 1000 / 5000
e/Å²) of seeds [FREE_SEED, i], not those of tests/scgn/test_bundled.py.

Candidates: where the atom map comes from (the model's own map output, or the bundled ``hrtem-atoms``), the
detector (``auto``, ``model``: see scgn.localize), the atom map's peak threshold (the model card's, chosen on the
training run's validation set, or another) and the lattice gate's ``LATTICE_FRACTION``, ``CONFIRM_MIN`` and
``LATTICE_SCOPE`` (the fraction required at each column, or somewhere in the frame).
Each row: mean column F1 (2 px) per tuning condition, their mean, and the most columns reported on one lattice-free
frame, and F1 on noise-free frames of a resolvable lattice (em_noise.controls.resolvable_lattice, seeds
[CLEAN_SEED, i], not the tests'). The defaults are the row of best mean F1 among those reporting at
most ``MAX_FREE`` columns on every lattice-free frame and finding the clean lattice (F1 ≥ ``MIN_CLEAN_F1``); rows
within ``TIE`` of it are ties, and of those the one changing fewest previous defaults wins.
"""
from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scgn_bench as bench  # noqa: E402  (benchmarks/scgn_bench.py: tuning seeds and frames)

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks/results/scgn_detection.md"
FREE_SEED = 905_000_001
FREE_FRAMES = [(k, d) for k in ("vacuum", "amorphous", "fringes") for d in (200.0, 1000.0, 5000.0)]
FRACTIONS = (0.25, 0.15, 0.1, 0.05, 0.0)  # 0: no lattice gate
CONFIRMS = (20.0, 10.0)
MAP_THRESHOLDS = (None, 0.05, 0.1, 0.2, 0.3)  # atom-map peak threshold (None: the model card's)
SHOWN = 24  # rows of the table (best mean F1 first), plus the previous default
MAX_FREE = 2  # at most this many columns on any lattice-free frame (a crystal frame of this size holds hundreds)
CLEAN_SEED, N_CLEAN, MIN_CLEAN_F1 = 905_100_001, 2, 0.9  # noise-free resolvable lattice: columns must be found
TIE = 0.01  # mean-F1 differences below this are ties (16 frames per condition)


def outputs(runner, x: np.ndarray) -> tuple[np.ndarray | None, np.ndarray]:
    """(restored frame or None, atom map) of one network on one frame."""
    from scgn.api import image_output

    outs = runner.run(x, mode="hrtem")
    name = image_output(runner.card)
    return (outs[name] if name != "atom_map" else None), outs["atom_map"]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hrtem", help="bundled name, .pt + card or checkpoint (two outputs)")
    p.add_argument("--atoms-model", default=None,
                   help="the atom-map network compared with the model's own map (default: the bundled hrtem-atoms)")
    p.add_argument("--frames", type=int, default=bench.N_VAL, help="tuning frames per condition")
    p.add_argument("--free", type=int, default=2, help="lattice-free frames per kind and dose")
    p.add_argument("-o", "--output", type=Path, default=RESULT)
    args = p.parse_args()
    from em_noise.controls import lattice_free_frame, resolvable_lattice
    from em_noise.metrics import match_positions
    from em_noise.restore import Runner
    from scgn import api, localize

    torch.set_num_threads(1)
    runner = Runner(*api.load_model(args.model))
    atoms = Runner(*api.load_model(args.atoms_model or api.ATOMS_MODEL))
    conds = {f"{d:g} e/Å²": d for d in bench.DOSES} | {"default": None}
    items = []  # (condition, frame, positions)
    for name, dose in conds.items():
        for d in bench.frames(dose, bench.VAL_SEED + (0 if dose is None else int(dose)), args.frames):
            items.append((name, d["x"], d["positions"]))
    for i, (kind, dose) in enumerate(FREE_FRAMES * args.free):
        items.append(("free", lattice_free_frame(kind, dose, [FREE_SEED, i]), None))
    for i in range(N_CLEAN):
        s = resolvable_lattice([CLEAN_SEED, i])
        items.append(("clean", s["clean"], s["positions"]))
    defaults = (localize.LATTICE_FRACTION, localize.CONFIRM_MIN, localize.LATTICE_SCOPE)
    t0 = time.time()
    cached = []  # (condition, input, truth, denoised, {source: atom map}, {confirm: lattice map})
    for n, (cond, x, truth) in enumerate(items):
        den, own = outputs(runner, x)
        lmaps = {confirm: localize.lattice_map(den, x, confirm_min=confirm) for confirm in CONFIRMS}
        cached.append((cond, x, truth, den, {"own map": own, "hrtem-atoms map": outputs(atoms, x)[1]}, lmaps))
        print(f"  {n + 1}/{len(items)} frames, {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    tune = [c for c in cached if c[0] not in ("free", "clean")]
    settings = {}
    for src, card in (("own map", runner.card), ("hrtem-atoms map", atoms.card)):
        settings[src] = card.detection
        if settings[src] is None:  # a checkpoint: peak settings of its map chosen here, on the tuning frames
            settings[src] = localize.tune_detection([c[4][src] for c in tune], [c[2] for c in tune])
    # (source, contrast, fraction, confirm, scope, threshold, card's) -> {condition: [F1 per frame], "free": [count]}
    f1 = {}
    for cond, _x, truth, den, maps, lmaps in cached:
        for (src, amap), confirm, thr in itertools.product(maps.items(), CONFIRMS, MAP_THRESHOLDS):
            det = settings[src] | ({} if thr is None else {"threshold": thr})
            for contrast, frac, scope in itertools.product(("auto", "model"), FRACTIONS, localize.LATTICE_SCOPES):
                if frac == 0 and scope == "column":
                    scope = "none"  # no lattice gate
                elif frac == 0:
                    continue
                pos = localize.frame_columns(den, amap, contrast, None if scope == "none" else lmaps[confirm],
                                             fraction=frac, scope="column" if scope == "none" else scope,
                                             map_detection=det)[0]
                score = len(pos) if cond == "free" else match_positions(pos, truth, bench.MATCH_PX)["f1"]
                key = (src, contrast, frac, confirm, scope, det["threshold"], thr is None)
                f1.setdefault(key, {}).setdefault(cond, []).append(score)
    write(f1, list(conds), defaults, settings, args)


def write(f1: dict, conds: list[str], defaults: tuple[float, float, str], settings: dict, args) -> None:
    from em_noise.training import hardware
    rows = []
    for key, r in f1.items():
        means = [float(np.mean(r[c])) for c in conds]
        rows.append((key, means, float(np.mean(means)), int(max(r["free"])), float(np.mean(r["clean"]))))
    ok = [r for r in rows if r[3] <= MAX_FREE and r[4] >= MIN_CLEAN_F1]
    was = ("hrtem-atoms map", "auto", *defaults)

    def changes(key: tuple) -> int:  # settings that differ from the previous defaults (card threshold = default)
        return sum(a != b for a, b in zip(key[:5], was)) + (not key[6])

    top = max((r[2] for r in ok), default=0.0)
    ties = [r for r in ok if r[2] >= top - TIE]
    best = min(ties, key=lambda r: (changes(r[0]), -r[2])) if ties else None
    lines = ["# SCGN detection defaults — tuning frames only", "",
             f"Produced by `OMP_NUM_THREADS=1 uv run python benchmarks/scgn_detection.py --model {args.model} "
             + (f"--atoms-model {args.atoms_model} " if args.atoms_model else "")
             + f"--frames {args.frames} --free {args.free}` on {hardware()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Frames and rule: the script's docstring. "
             f"F1: columns matched within {bench.MATCH_PX:g} px (means over frames); free: most columns on one of "
             f"{len(FREE_FRAMES) * args.free} lattice-free frames (allowed: {MAX_FREE}); clean lattice F1: mean over "
             f"{N_CLEAN} noise-free W [110] frames (required: {MIN_CLEAN_F1:g}). Atom-map peak settings: "
             + "; ".join(f"{k}: threshold {v['threshold']:g}, min distance {v['min_distance_px']:g} px"
                         for k, v in settings.items()) + ".", "",
             "| atom map | detector | lattice fraction | confirm min | lattice scope | map threshold | "
             + " | ".join(conds) + " | mean F1 | free | clean lattice F1 |",
             "|---|---|---|---|---|---|" + "---|" * (len(conds) + 3)]
    for n, (key, means, mean, free, clean) in enumerate(sorted(rows, key=lambda r: -r[2])):
        previous, chosen = changes(key) == 0, best is not None and key == best[0]
        if n >= SHOWN and not (previous or chosen):
            continue
        mark = (" **chosen**" if chosen else "") + (" (the previous default)" if previous else "")
        lines.append(f"| {key[0]}{mark} | {key[1]} | {key[2]:g} | {key[3]:g} | {key[4]} | {key[5]:g}"
                     f"{' (card)' if key[6] else ''} | " + " | ".join(f"{m:.3f}" for m in means)
                     + f" | {mean:.3f} | {free} | {clean:.3f} |")
    lines += ["", f"{len(rows)} settings tried; the {SHOWN} of best mean F1 shown."]
    args.output.write_text("\n".join(lines + [""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
