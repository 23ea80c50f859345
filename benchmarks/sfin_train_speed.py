"""SFIN training speed on this CPU: one optimiser step of the bundled recipe (batch 2, whole 256² frames, L1, Adam)
in eager mode, with ``channels_last`` and with ``torch.compile``, on 1 and 2 threads; the time to synthesise one
batch of the training mix; each against the step's FLOP floor.

    uv run python benchmarks/sfin_train_speed.py      # -> benchmarks/results/sfin_train_speed.md

Floor: 3 × the forward FLOPs (forward + backward, benchmarks/flops.py) of the batch at this machine's measured fp32
matmul throughput on the same threads. Run it on an otherwise idle machine: a training run beside it halves every
figure. Each variant runs in a fresh process (thread settings do not carry over); the compiled variant's first step
includes the compilation, shorter when torch's inductor cache already holds the compiled code.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sfin_train_speed.md"
CONFIG = ROOT / "packages" / "sfin" / "src" / "sfin" / "configs" / "stem.yaml"
VARIANTS = ("eager", "channels_last", "compile")
BATCH, SIZE = 2, 256


def recipe() -> dict:
    import yaml

    return yaml.safe_load(CONFIG.read_text())


def child(variant: str, threads: int, steps: int) -> dict:
    """Median seconds per optimiser step of ``variant`` on ``threads`` threads (the first steps are warm-up)."""
    import torch

    torch.set_num_threads(threads)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from flops import flops_per_pixel, machine_gflops
    from sfin.model import SFIN

    m = recipe()["model"]
    torch.manual_seed(0)
    net = SFIN(m["width"], m["blocks"], m["layers_per_block"], m["pos_encoding"])
    fpp = flops_per_pixel(net)
    x, y = torch.rand(BATCH, 1, SIZE, SIZE), torch.rand(BATCH, 1, SIZE, SIZE)
    if variant == "channels_last":
        net = net.to(memory_format=torch.channels_last)
        x, y = x.contiguous(memory_format=torch.channels_last), y.contiguous(memory_format=torch.channels_last)
    model = torch.compile(net) if variant == "compile" else net
    opt = torch.optim.Adam(net.parameters(), lr=m["lr"])
    times = []
    for _ in range(steps + 2):
        t = time.perf_counter()
        loss = (model(x) - y).abs().mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t)
    first = times[0]
    times = sorted(times[2:])
    gflops = machine_gflops(threads)
    floor = 3.0 * fpp * BATCH * SIZE * SIZE / (gflops * 1e9)
    return {"variant": variant, "threads": threads, "step_s": times[len(times) // 2], "first_step_s": first,
            "floor_s": floor, "gflops": gflops, "mflop_per_px": fpp / 1e6}


def data_child(batches: int) -> dict:
    """Seconds to synthesise one training batch of the recipe's mix (one thread, as a data worker would)."""
    import torch

    torch.set_num_threads(1)
    from sfin.data import STEMDataModule

    dm = STEMDataModule(**recipe()["data"])
    dm.setup("fit")
    ds = dm._train
    t = time.perf_counter()
    for i in range(batches * BATCH):
        ds[i]
    return {"batch_s": (time.perf_counter() - t) / batches}


def run(steps: int, batches: int) -> None:
    rows = []
    for threads in (1, 2):
        for v in VARIANTS:
            out = subprocess.run([sys.executable, __file__, "child", v, str(threads), str(steps)], capture_output=True,
                                 text=True, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
            if out.returncode:
                rows.append({"variant": v, "threads": threads, "error": out.stderr.strip().splitlines()[-1]})
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr, flush=True)
    out = subprocess.run([sys.executable, __file__, "data", str(batches)], capture_output=True, text=True,
                         env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True)
    data = json.loads(out.stdout.strip().splitlines()[-1])
    ok = [r for r in rows if "error" not in r]
    rec = recipe()
    lines = ["# SFIN training speed", "",
             f"Produced by `uv run python benchmarks/sfin_train_speed.py` on {platform.node()} ({os.cpu_count()}-core "
             f"CPU), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. One optimiser step of the bundled recipe "
             f"(`configs/stem.yaml`: width {rec['model']['width']}, {rec['model']['blocks']} blocks; batch "
             f"{BATCH} × {SIZE}² frames, L1, Adam), median of {steps} steps after 2 warm-up steps, each variant in a "
             f"fresh process. Model: {ok[0]['mflop_per_px']:.3f} MFLOP per pixel forward; floor = 3 × forward FLOPs "
             "at the measured fp32 matmul throughput of the same threads. The first step of `compile` includes the "
             "compilation (shorter with a warm inductor cache)." if ok else "", "",
             "| threads | variant | s / step | steps / s | floor (s) | ratio to floor | first step (s) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['threads']} | {r['variant']} | failed: {r['error'][:80]} | | | | |")
        else:
            lines.append(f"| {r['threads']} | {r['variant']} | {r['step_s']:.3f} | {1 / r['step_s']:.2f} | "
                         f"{r['floor_s']:.3f} | {r['step_s'] / r['floor_s']:.1f}× | {r['first_step_s']:.1f} |")
    lines += ["", f"Data: one training batch of the recipe's mix ({rec['data']['synth']['recipe']}) takes "
              f"{data['batch_s']:.3f} s to synthesise on one thread; the training loop makes it between steps "
              "(`num_workers: 0`), so a step of `sfin-train fit` costs about the step time plus this.", ""]
    RESULTS.write_text("\n".join(lines))
    print(RESULTS.read_text())


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["child"]:
        print(json.dumps(child(argv[1], int(argv[2]), int(argv[3]))))
        return 0
    if argv[:1] == ["data"]:
        print(json.dumps(data_child(int(argv[1]))))
        return 0
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=8, help="timed optimiser steps per variant")
    p.add_argument("--batches", type=int, default=8, help="training batches synthesised for the data time")
    args = p.parse_args(argv)
    run(args.steps, args.batches)
    return 0


if __name__ == "__main__":
    sys.exit(main())
