"""SFIN benchmark: enhancement quality on the SFIN authors' data distribution and on em-noise's, speed and memory.

    # the equal-budget U-Net (same data stream, batch, frame size, steps and schedule as the shipped SFIN):
    OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py train-unet [--max-steps N]
    # the tables -> benchmarks/results/sfin.md (per-method results cached in runs/sfin/bench/)
    OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py run

Test sets (never trained or tuned on): 100 HAADF and 100 BF 256² images of each recipe, seeds TEST_SEED. The
training stream uses seeds [0, i] (HAADF) and [1, i] (BF), its validation [900000001, i] / [900000002, i].
Tuning set: the parameters of every classical baseline (σ, window, BM3D level, an affine intensity map) and each
method's peak threshold for F1 are chosen on 16 validation images per mode and recipe, seeds VAL_SEED.

Table 1, `sfin-paper` recipe (em_noise.sfin_paper: the authors' published generator), the paper's convention:
PSNR and SSIM (11×11 Gaussian window, σ 1.5 px) on 0–255 against the 8-bit enhancement target; outputs are put on
that scale (SFIN: its own output ×255; classical filters: their fitted affine map ×255) and clipped to 0–255 as the
authors' PNG outputs are. Column F1: peaks of the output (BF inverted) matched one-to-one within 3 px to the true
atom positions (the σ = 1 px localisation targets' centres). The paper's own figures are a reference row, measured
on the authors' test images (the same distribution, other draws) after 500 GPU epochs.
Table 2, `em-noise` recipe (em_noise.synth's lattices, disorder and noise priors), same metrics.
Speed: the shipped model's FLOPs per pixel (convolutions + FFTs, benchmarks/flops.py), this machine's measured fp32
matmul throughput, time for one 2048² frame as `sfin-enhance` runs it (2 threads, fresh process) and its ratio to
the FLOP floor; peak RSS of an 8192² frame.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402  (benchmarks/baselines.py)
from em_noise import metrics  # noqa: E402
from em_noise.scaling import normalize, robust_range  # noqa: E402
from em_noise.synth import SynthConfig, synthesize  # noqa: E402
from flops import flops_per_pixel, machine_gflops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sfin.md"
SPEED_RESULTS = ROOT / "benchmarks" / "results" / "sfin_speed.md"
WEIGHTS = ROOT / "benchmarks" / "weights"
CACHE = ROOT / "runs" / "sfin" / "bench"
CONFIG = ROOT / "packages" / "sfin" / "src" / "sfin" / "configs" / "stem.yaml"
RECIPES = ("sfin-paper", "em-noise")
TEST_SEED = {("sfin-paper", "haadf"): 555_000_001, ("sfin-paper", "bf"): 555_000_002,
             ("em-noise", "haadf"): 777_000_001, ("em-noise", "bf"): 777_000_002}
VAL_SEED = {("sfin-paper", "haadf"): 900_100_001, ("sfin-paper", "bf"): 900_100_002,
            ("em-noise", "haadf"): 900_200_001, ("em-noise", "bf"): 900_200_002}
VAL_N, SIZE = 16, 256
MATCH_PX, PEAK_MIN_DIST_PX = 3.0, 2
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
PAPER_ROWS = {"SFIN (paper, GPU, 500 epochs)": {"haadf": 38.48, "bf": 33.24},
              "FCN (paper)": {"haadf": 36.50, "bf": None}, "Wiener (paper)": {"haadf": 16.43, "bf": None}}


# ----------------------------------------------------------------------------------------------- data


def load_set(recipe: str, mode: str, seed: int, n: int) -> list[dict]:
    """n 256² samples: raw noisy (0–255), network input x in [0, 1] scale, target (0–1), atom positions (px)."""
    cfg = SynthConfig(mode=mode, size=SIZE, recipe=recipe)
    out = []
    for i in range(n):
        s = synthesize(cfg, [seed, i])
        x = normalize(s["noisy"], *robust_range(s["noisy"]))
        out.append({"noisy": s["noisy"], "x": x, "target": s["target"], "positions": s["positions"]})
    return out


# ----------------------------------------------------------------------------------------------- methods


def net_method(net: torch.nn.Module, mode: str, invert_bf: bool, tile: int | None = None,
               overlap: int = 32) -> Callable[[np.ndarray], np.ndarray]:
    """The net on the [0, 1] input, BF inverted before and after for a net trained at HAADF polarity; whole
    frame, or em_noise.tiling tiles of ``tile`` px."""
    from em_noise.tiling import predict_tiled

    net.eval()
    flip = mode == "bf" and invert_bf

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        xi = 1.0 - x if flip else x
        if tile is None:
            y = net(torch.from_numpy(np.ascontiguousarray(xi, dtype=np.float32))[None, None])[0, 0].numpy()
        else:
            y = predict_tiled(net, xi, tile_size=tile, overlap=overlap)
        return 1.0 - y if flip else y

    return run


def classical_methods() -> dict[str, Callable[[list[dict]], tuple[Callable, str]]]:
    """Classical filters: name -> fit(validation set) -> (x -> output, settings); parameters and an affine
    intensity map are chosen on the validation (tuning) set."""

    def gaussian(val):
        g = baselines.gaussian_filter_best([v["x"] for v in val], [v["target"] for v in val])
        return (lambda x: baselines.apply_fitted(baselines.gaussian_filter, g, x)), f"σ={g['kwargs']['sigma_px']} px"

    def wiener(val):
        w = baselines.fit_on_validation(baselines.wiener, [{"size": s} for s in (3, 5, 7, 9, 11)],
                                        [v["x"] for v in val], [v["target"] for v in val])
        return (lambda x: baselines.apply_fitted(baselines.wiener, w, x)), f"window {w['kwargs']['size']} px"

    def bm3d(val):
        b = baselines.fit_on_validation(baselines.bm3d_scaled, [{"factor": f} for f in (1.0, 2.0, 4.0)],
                                        [v["x"] for v in val[:8]], [v["target"] for v in val[:8]])
        return (lambda x: baselines.apply_fitted(baselines.bm3d_scaled, b, x)), \
            f"σ = {b['kwargs']['factor']}× estimated, hard thresholding"

    return {"Gaussian filter (best σ)": gaussian, "Wiener": wiener, "BM3D": bm3d}


# ----------------------------------------------------------------------------------------------- scoring


def to_255(y: np.ndarray) -> np.ndarray:
    """A [0, 1]-scale output on the paper's 0–255 scale, clipped as an 8-bit PNG output is."""
    return np.clip(255.0 * np.asarray(y, dtype=np.float64), 0.0, 255.0)


def localize(img255: np.ndarray, mode: str, thr: float) -> np.ndarray:
    img = img255 if mode == "haadf" else 255.0 - img255
    return metrics.find_peaks(img, min_distance_px=PEAK_MIN_DIST_PX, threshold_rel=thr)


def best_threshold(outputs: list[np.ndarray], samples: list[dict], mode: str) -> float:
    scores = [np.mean([metrics.match_positions(localize(o, mode, t), s["positions"], MATCH_PX)["f1"]
                       for o, s in zip(outputs, samples)]) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(scores))])


def score(method: Callable[[dict], np.ndarray], mode: str, val: list[dict], test: list[dict]) -> dict:
    """Mean PSNR / SSIM on 0–255 and column F1 of ``method`` (sample -> 0–255 image) over the test set."""
    thr = best_threshold([method(v) for v in val], val, mode)
    psnr, ssim, f1 = [], [], []
    t0 = time.perf_counter()
    for s in test:
        o = method(s)
        ref = 255.0 * s["target"].astype(np.float64)
        psnr.append(metrics.psnr(o, ref, data_range=255.0))
        ssim.append(metrics.ssim(o, ref, data_range=255.0))
        f1.append(metrics.match_positions(localize(o, mode, thr), s["positions"], MATCH_PX)["f1"])
    return {"psnr": float(np.mean(psnr)), "psnr_std": float(np.std(psnr)), "ssim": float(np.mean(ssim)),
            "f1": float(np.mean(f1)), "peak_threshold_rel": thr, "n": len(test),
            "s_per_image": (time.perf_counter() - t0) / len(test)}


# ----------------------------------------------------------------------------------------------- models


def shipped_sfin() -> tuple[torch.nn.Module, dict, bool]:
    """(net, card, trained at HAADF polarity for BF too) of the bundled 'haadf' model."""
    from em_noise import weights

    net, card = weights.load("haadf", package="sfin")
    return net, card, "bf" in card.io.invert


def load_unet() -> tuple[torch.nn.Module, dict] | None:
    path = WEIGHTS / "sfin_unet_stem.pt"
    if not path.is_file():
        return None
    card = json.loads(path.with_suffix(".json").read_text())
    net = baselines.UNet(**card["model_config"])
    net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return net.eval(), card


# ----------------------------------------------------------------------------------------------- speed / memory


def frame(size: int) -> np.ndarray:
    """A size² noisy HAADF frame (a 2048² em-noise frame tiled when larger)."""
    s = synthesize(SynthConfig(mode="haadf", size=min(size, 2048)), [TEST_SEED[("em-noise", "haadf")], 10_000])
    reps = -(-size // s["noisy"].shape[0])
    return np.tile(s["noisy"], (reps, reps))[:size, :size].astype(np.float32)


def speed_child(size: int, threads: int) -> None:
    """In a fresh process: enhance one size² frame as sfin-enhance does; print seconds and peak RSS (MB)."""
    torch.set_num_threads(threads)
    import sfin

    img = frame(size)
    sfin.enhance(img[:64, :64], mode="haadf")  # load the model, warm up
    t0 = time.perf_counter()
    sfin.enhance(img, mode="haadf")
    dt = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"size": size, "seconds": dt, "peak_rss_mb": rss_mb, "threads": threads}))


def speed(size: int, threads: int = 2) -> dict:
    cmd = [sys.executable, __file__, "speed-child", "--size", str(size), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"speed child failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- U-Net training


def train_unet(max_steps: int | None) -> None:
    """Train the U-Net baseline on SFIN's data config (stem.yaml: same data stream, batch, frame size, schedule);
    steps default to the shipped SFIN's cumulative steps. Exports benchmarks/weights/sfin_unet_stem.pt + .json."""
    import yaml
    from em_noise.training import checkpoint_wall_time_s, evaluate, export_weights
    from lightning.pytorch.cli import LightningCLI
    from sfin.data import STEMDataModule

    cfg = yaml.safe_load(CONFIG.read_text())
    _, card, _ = shipped_sfin()
    steps = int(max_steps or card.training.cumulative.steps)
    run_dir = ROOT / "runs" / "sfin" / "unet_stem"
    cfg["model"] = {"width": 16, "depth": 3, "residual": False, "lr": cfg["model"]["lr"],
                    "milestones": cfg["model"]["milestones"], "gamma": cfg["model"]["gamma"]}
    cfg["trainer"]["max_steps"] = steps
    cfg["trainer"]["default_root_dir"] = str(run_dir)
    cfg["trainer"]["logger"]["init_args"]["save_dir"] = str(run_dir)
    for cb in cfg["trainer"]["callbacks"]:
        if cb["class_path"].endswith("ModelCheckpoint"):
            cb["init_args"]["dirpath"] = str(run_dir / "checkpoints")
    run_dir.mkdir(parents=True, exist_ok=True)
    cfg_path = run_dir / "config.unet.yaml"
    cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ckpt = run_dir / "checkpoints" / "last.ckpt"
    args = ["fit", "--config", str(cfg_path)] + (["--ckpt_path", str(ckpt)] if ckpt.is_file() else [])
    LightningCLI(baselines.UNetModule, STEMDataModule, args=args, save_config_kwargs={"overwrite": True})
    module = baselines.UNetModule.load_from_checkpoint(ckpt, map_location="cpu")
    dm = STEMDataModule(**cfg["data"])
    dm.setup("validate")
    val = evaluate(module.net, dm.val_dataloader())
    done = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    out = {"name": "sfin_unet_stem", "model": "benchmarks/baselines.UNet",
           "model_config": {k: module.hparams[k] for k in ("width", "depth", "residual")},
           "parameters": sum(p.numel() for p in module.net.parameters()),
           "training": {"steps": done, "wall_time_s": round(checkpoint_wall_time_s(ckpt) or 0.0, 1),
                        "config": "packages/sfin/configs/stem.yaml with the model section replaced",
                        "command": "OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py train-unet"},
           "validation": {"psnr_dB": round(val["psnr"], 3), "ssim": round(val["ssim"], 4)}}
    export_weights(module.net, WEIGHTS / "sfin_unet_stem.pt", out)
    print(json.dumps(out["validation"]))


# ----------------------------------------------------------------------------------------------- the tables


def cached(key: str, fn: Callable[[], dict], refresh: bool) -> dict:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{key}.json"
    if path.is_file() and not refresh:
        return json.loads(path.read_text())
    res = fn()
    path.write_text(json.dumps(res, indent=1))
    return res


def methods_for(mode: str, net, card, invert_bf: bool, unet) -> dict[str, Callable[[list[dict]], tuple]]:
    """name -> fit(validation set) -> (sample -> 0–255 output, settings)."""
    out: dict[str, Callable] = {"Noisy input": lambda val: ((lambda s: np.clip(s["noisy"], 0, 255)),
                                                            "the raw 0–255 input")}
    for name, fit in classical_methods().items():
        def fitted(val, fit=fit):
            fn, note = fit(val)
            return (lambda s: to_255(fn(s["x"]))), note + ", affine map on the tuning set"
        out[name] = fitted
    if unet is not None:
        u, c = unet
        fn = net_method(u, mode, invert_bf=True)
        note = f"{c['parameters']:,} params, {c['training']['steps']} steps, {c['training']['wall_time_s']:,.0f} s"
        equal = card is not None and c["training"]["steps"] == card.training.cumulative.steps
        label = "U-Net (equal budget)" if equal else "U-Net (fewer steps than SFIN)"
        out[label] = lambda val: ((lambda s: to_255(fn(s["x"]))), note)
    if net is not None:
        desc = (f"{sum(p.numel() for p in net.parameters()):,} params, {card.training.cumulative.steps} steps, "
                f"{card.training.cumulative.wall_time_s:,.0f} s")
        whole = net_method(net, mode, invert_bf)
        tiled = net_method(net, mode, invert_bf, tile=128, overlap=32)
        out["SFIN (shipped), whole frame"] = lambda val: ((lambda s: to_255(whole(s["x"]))),
                                                          desc + ", one pass per frame")
        out["SFIN (shipped), 128 px tiles"] = lambda val: ((lambda s: to_255(tiled(s["x"]))),
                                                           "tiles 128 px, overlap 32, blended")
    return out


def run(n: int, refresh: bool, skip_speed: bool, skip_8192: bool, only: list[str] | None) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    try:
        net, card, invert_bf = shipped_sfin()
    except Exception as exc:  # no shipped model in this checkout
        print(f"no shipped SFIN model: {exc}", file=sys.stderr)
        net, card, invert_bf = None, None, True
    unet = load_unet()
    tables: dict[str, dict[str, dict[str, dict]]] = {}
    notes: dict[str, dict[str, str]] = {}
    for recipe in RECIPES:
        rows: dict[str, dict[str, dict]] = {}
        for mode in ("haadf", "bf"):
            val = load_set(recipe, mode, VAL_SEED[(recipe, mode)], VAL_N)
            test = load_set(recipe, mode, TEST_SEED[(recipe, mode)], n)
            for name, fit in methods_for(mode, net, card, invert_bf, unet).items():
                if only and not any(o.lower() in name.lower() for o in only):
                    continue
                key = f"{recipe}_{mode}_{''.join(ch if ch.isalnum() else '_' for ch in name.lower())}_n{n}"
                if name.startswith("SFIN") and card is not None:  # a re-exported model is a new method
                    key += f"_{card.created_utc or ''}".replace(":", "")
                print(f"[{recipe} {mode}] {name} ...", file=sys.stderr, flush=True)

                def evaluate(fit=fit, mode=mode, val=val, test=test) -> dict:
                    fn, note = fit(val)
                    return {**score(fn, mode, val, test), "settings": note}

                rows.setdefault(name, {})[mode] = res = cached(key, evaluate, refresh)
                notes.setdefault(name, {})[mode] = res["settings"]
        tables[recipe] = rows
    perf: dict[str, dict] = {}
    if net is not None:
        perf["flops_per_px"] = {"value": flops_per_pixel(net)}
        perf["gflops"] = {"1": machine_gflops(1), "2": machine_gflops(2)}
        if not skip_speed:
            perf["2048"] = cached("speed_2048", lambda: speed(2048), refresh)
            if not skip_8192:
                perf["8192"] = cached("speed_8192", lambda: speed(8192), refresh)
    write_tables(tables, notes, perf, n, card)


def speed_lines(perf: dict) -> list[str]:
    """The 'Speed and memory' section: FLOPs per pixel, matmul throughput, and each measured frame size."""
    if not perf:
        return []
    fpp = perf["flops_per_px"]["value"]
    g2 = perf["gflops"]["2"]
    lines = ["## Speed and memory", "",
             f"Shipped model: {fpp / 1e6:.3f} MFLOP per pixel (convolutions + FFTs, benchmarks/flops.py). "
             f"This machine's fp32 matmul throughput: {perf['gflops']['1']:.0f} GFLOP/s on 1 thread, "
             f"{g2:.0f} on 2.", ""]
    for size in ("2048", "8192"):
        p = perf.get(size)
        if not p:
            lines.append(f"- {size}² frame: not measured in this run (`sfin_bench.py speed` → sfin_speed.md)")
            continue
        floor = fpp * int(size) ** 2 / (g2 * 1e9)
        floor100 = fpp * int(size) ** 2 / 100e9
        lines.append(f"- {size}² frame: {p['seconds']:.1f} s on {p['threads']} threads, peak RSS "
                     f"{p['peak_rss_mb']:.0f} MB; FLOP floor {floor:.1f} s at the measured {g2:.0f} GFLOP/s "
                     f"(ratio {p['seconds'] / floor:.1f}×), {floor100:.1f} s at 100 GFLOP/s "
                     f"(ratio {p['seconds'] / floor100:.1f}×)")
    return lines + [""]


def run_speed(sizes: list[int], threads: int) -> None:
    """Speed and memory of the shipped model alone -> benchmarks/results/sfin_speed.md (no quality tables)."""
    net, card, _ = shipped_sfin()
    perf: dict = {"flops_per_px": {"value": flops_per_pixel(net)},
                  "gflops": {"1": machine_gflops(1), "2": machine_gflops(2)}}
    for size in sizes:
        perf[str(size)] = speed(size, threads)
        print(perf[str(size)], file=sys.stderr, flush=True)
    lines = ["# SFIN speed and memory", "",
             f"Produced by `uv run python benchmarks/sfin_bench.py speed` on {platform.node()} ({os.cpu_count()}-core "
             f"CPU), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, model `haadf` (card created "
             f"{card.created_utc}). Each frame is enhanced in a fresh process as `sfin.enhance` runs it (default "
             "tiles); time excludes loading the model; peak RSS is the process's maximum resident memory.", ""]
    text = "\n".join(lines + speed_lines(perf)) + "\n"
    SPEED_RESULTS.write_text(text)
    print(text, end="")


def write_tables(tables: dict, notes: dict, perf: dict, n: int, card) -> None:
    def cell(r: dict | None, key: str, fmt: str) -> str:
        return format(r[key], fmt) if r else "—"

    lines = ["# SFIN benchmark", "",
             f"Produced by `OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py run` on {platform.node()} "
             f"({os.cpu_count()}-core CPU), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
             f"Test sets: {n} images per mode and recipe, never trained or tuned on; tuning set: {VAL_N} images per "
             "mode and recipe (classical parameters, affine maps, peak thresholds). See the script's docstring.", ""]
    for recipe, rows in tables.items():
        title = ("Table 1 — `sfin-paper` recipe (the authors' published generator), paper convention: PSNR (dB) / "
                 "SSIM on 0–255" if recipe == "sfin-paper" else
                 "Table 2 — `em-noise` recipe (em-noise lattices, disorder, noise priors), PSNR (dB) / SSIM on 0–255")
        lines += [f"## {title}", "", f"Column F1: peaks of the output matched within {MATCH_PX:g} px to the true "
                  "atom positions.", "",
                  "| Method | HAADF PSNR | HAADF SSIM | HAADF F1 | BF PSNR | BF SSIM | BF F1 | Settings |",
                  "|---|---|---|---|---|---|---|---|"]
        for name, r in rows.items():
            h, b = r.get("haadf"), r.get("bf")
            note = next(iter(notes[name].values()))
            lines.append(f"| {name} | {cell(h, 'psnr', '.2f')} | {cell(h, 'ssim', '.3f')} | {cell(h, 'f1', '.3f')} | "
                         f"{cell(b, 'psnr', '.2f')} | {cell(b, 'ssim', '.3f')} | {cell(b, 'f1', '.3f')} | {note} |")
        if recipe == "sfin-paper":
            for name, v in PAPER_ROWS.items():
                hv = f"{v['haadf']:.2f}" if v["haadf"] is not None else "—"
                bv = f"{v['bf']:.2f}" if v["bf"] is not None else "—"
                lines.append(f"| {name} | {hv} | — | — | {bv} | — | — | reference: the paper's table |")
        lines.append("")
    lines += speed_lines(perf)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="compute the tables")
    r.add_argument("--n", type=int, default=100, help="test images per mode and recipe")
    r.add_argument("--refresh", action="store_true", help="ignore cached per-method results")
    r.add_argument("--skip-speed", action="store_true")
    r.add_argument("--skip-8192", action="store_true")
    r.add_argument("--only", nargs="*", default=None, help="only methods whose name contains one of these")
    t = sub.add_parser("train-unet", help="train + export the equal-budget U-Net baseline")
    t.add_argument("--max-steps", type=int, default=None, help="default: the shipped SFIN's cumulative steps")
    sp = sub.add_parser("speed", help="speed and memory only -> benchmarks/results/sfin_speed.md")
    sp.add_argument("--sizes", type=int, nargs="+", default=[2048, 8192])
    sp.add_argument("--threads", type=int, default=2)
    c = sub.add_parser("speed-child")
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.n, args.refresh, args.skip_speed, args.skip_8192, args.only)
    elif args.cmd == "speed":
        run_speed(args.sizes, args.threads)
    elif args.cmd == "train-unet":
        train_unet(args.max_steps)
    else:
        speed_child(args.size, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
