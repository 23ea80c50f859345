"""Choosing the mirrored border of scgn-denoise's frames on tuning frames -> benchmarks/results/scgn_padding.md.

    OMP_NUM_THREADS=1 uv run python benchmarks/scgn_padding.py            # the shipped hrtem

A network's zero-padded convolutions and periodic FFTs see a border at the frame's edge; padding each frame with
its own mirror image (em_noise.tiling.predict_tiled's ``pad``, a card's ``inference.pad_px``) hides it. Tuning
frames only (never the test sets of benchmarks/scgn_bench.py or the tests): scgn_bench's tuning seeds
([VAL_SEED + dose, i], nucleation frames at 20, 200 and 2000 e/Å², and default frames at [VAL_SEED, i]). Each row:
PSNR (dB) / SSIM / IoU of the denoised frame against the clean target (network scale, data range 1), means over
frames, per condition and their mean. The choice is the pad of best mean PSNR; pads within ``TIE`` of it are ties,
and of those the smallest wins.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scgn_bench as bench  # noqa: E402  (benchmarks/scgn_bench.py: tuning seeds and frames)

ROOT = Path(__file__).resolve().parents[1]
RESULT = ROOT / "benchmarks/results/scgn_padding.md"
PADS = (0, 8, 16, 32)
TIE = 0.02  # dB


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="hrtem", help="bundled name, .pt + card or checkpoint")
    p.add_argument("--frames", type=int, default=bench.N_VAL, help="tuning frames per condition")
    p.add_argument("-o", "--output", type=Path, default=RESULT)
    args = p.parse_args()
    from em_noise import metrics
    from em_noise.tiling import predict_tiled
    from em_noise.training import hardware
    from scgn import api

    torch.set_num_threads(1)
    net, card = api.load_model(args.model)
    net.eval()
    channel = [o.name for o in card.io.outputs].index(api.image_output(card))
    conds = {f"{d:g} e/Å²": d for d in bench.DOSES} | {"default": None}
    scores = {pad: {c: [] for c in conds} for pad in PADS}
    t0 = time.time()
    for name, dose in conds.items():
        for d in bench.frames(dose, bench.VAL_SEED + (0 if dose is None else int(dose)), args.frames):
            for pad in PADS:
                out = predict_tiled(lambda x: net(x), d["x"], tile_size=card.inference.tile_size,
                                    overlap=card.inference.overlap, pad=pad)
                o = out.reshape(-1, *d["x"].shape)[channel]
                scores[pad][name].append((metrics.psnr(o, d["y"], data_range=1.0),
                                          metrics.ssim(o, d["y"], data_range=1.0), metrics.binarized_iou(o, d["y"])))
        print(f"  {name}: {time.time() - t0:.0f} s", file=sys.stderr, flush=True)
    means = {pad: {c: np.mean(v, axis=0) for c, v in s.items()} for pad, s in scores.items()}
    overall = {pad: float(np.mean([m[0] for m in means[pad].values()])) for pad in PADS}
    best = max(overall.values())
    chosen = min(pad for pad in PADS if overall[pad] >= best - TIE)
    lines = ["# SCGN frame padding — tuning frames only", "",
             f"Produced by `OMP_NUM_THREADS=1 uv run python benchmarks/scgn_padding.py --model {args.model} "
             f"--frames {args.frames}` on {hardware()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             f"Frames and rule: the script's docstring. PSNR (dB) / SSIM / IoU of the denoised frame, "
             f"{args.frames} frames per condition.", "",
             "| mirrored border | " + " | ".join(conds) + " | mean PSNR |", "|---|" + "---|" * (len(conds) + 1)]
    for pad in PADS:
        mark = " **chosen**" if pad == chosen else ""
        cells = " | ".join(f"{m[0]:.2f} / {m[1]:.3f} / {m[2]:.3f}" for m in means[pad].values())
        lines.append(f"| {pad} px{mark} | {cells} | {overall[pad]:.2f} |")
    args.output.write_text("\n".join(lines + [""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
