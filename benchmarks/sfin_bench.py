"""SFIN benchmark: enhancement PSNR/SSIM and localization F1 on fixed synthetic HAADF/BF test sets, speed and memory.

    # 1) the equal-budget U-Net baselines (same config/steps/batch/patch/data as the bundled SFIN models):
    OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py train-unet --mode haadf
    OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py train-unet --mode bf
    # 2) the table -> benchmarks/results/sfin.md (per-method results are cached in runs/sfin/bench/)
    OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py run

Test sets: 100 HAADF and 100 BF 256² images from em_noise.synth with seeds never used in training
(training stream seed 0, validation seed 900000001). Network input = noisy normalized by its 0.1/99.9 percentiles
(as in sfin-enhance); reference = em-noise's enhancement target in [0, 1]; PSNR/SSIM with data range 1.
Classical baselines get their parameters (σ, window, BM3D noise level) and an affine intensity map chosen on the
validation set (16 images, seed 900000001); the noisy-input row is the normalized input as is.
SFIN: tiled inference with the model card's tiling (as sfin-enhance), plus a whole-image row.
Localization F1: em_noise.metrics.find_peaks on the output (BF: on 1 - output, atoms are dark), threshold chosen
on the validation set per method, one-to-one matching within 2 px of the true column positions.
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

import baselines
import numpy as np
import torch
from em_noise import metrics
from em_noise.scaling import normalize, robust_range
from em_noise.synth import SynthConfig, synthesize

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results" / "sfin.md"
WEIGHTS = ROOT / "benchmarks" / "weights"
CACHE = ROOT / "runs" / "sfin" / "bench"
CONFIGS = ROOT / "packages" / "sfin" / "src" / "sfin" / "configs"
TEST_SEED = {"haadf": 777_000_001, "bf": 777_000_002}
VAL_SEED, VAL_N, SIZE = 900_000_001, 16, 256
MATCH_PX, PEAK_MIN_DIST_PX = 2.0, 2
THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6)
PAPER = ("Paper (own synthetic data, GPU, 500 epochs): HAADF SFIN 38.48 dB / 0.958, FCN 36.50 dB, "
         "AtomSegNet 34.33 dB, Wiener 16.43 dB; BF SFIN 33.24 dB / 0.989.")


# ----------------------------------------------------------------------------------------------- data


def load_set(mode: str, seed: int, n: int) -> list[dict]:
    """n synthetic 256² samples: network input x in [0, 1] scale, target, true column positions (x, y px)."""
    cfg = SynthConfig(mode=mode, size=SIZE)
    out = []
    for i in range(n):
        s = synthesize(cfg, [seed, i])
        x = normalize(s["noisy"], *robust_range(s["noisy"]))
        out.append({"x": x, "target": s["target"], "positions": s["positions"]})
    return out


# ----------------------------------------------------------------------------------------------- methods


def net_method(net: torch.nn.Module) -> Callable[[np.ndarray], np.ndarray]:
    net.eval()

    @torch.no_grad()
    def run(x: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(x)[None, None])[0, 0].numpy()

    return run


def tiled_method(net: torch.nn.Module, tile: int, overlap: int) -> Callable[[np.ndarray], np.ndarray]:
    """Inference as sfin-enhance runs it: em_noise.tiling with the model card's tiling."""
    from em_noise.tiling import predict_tiled

    net.eval()
    return lambda x: predict_tiled(net, x, tile_size=tile, overlap=overlap)


def load_unet(mode: str) -> torch.nn.Module | None:
    path = WEIGHTS / f"sfin_unet_{mode}.pt"
    if not path.is_file():
        return None
    card = json.loads(path.with_suffix(".json").read_text())
    net = baselines.UNet(**card["model_config"])
    net.load_state_dict(torch.load(path, map_location="cpu"))
    return net.eval()


def classical_methods(val: list[dict]) -> dict[str, tuple[Callable, str]]:
    """Classical filters with parameters + affine intensity map chosen on the validation set."""
    xs, ts = [v["x"] for v in val], [v["target"] for v in val]
    out: dict[str, tuple[Callable, str]] = {}
    g = baselines.gaussian_filter_best(xs, ts)
    out["Gaussian filter"] = (lambda x, g=g: baselines.apply_fitted(baselines.gaussian_filter, g, x),
                              f"σ={g['kwargs']['sigma_px']} px, affine on val")
    w = baselines.fit_on_validation(baselines.wiener, [{"size": s} for s in (3, 5, 7, 9, 11)], xs, ts)
    out["Wiener"] = (lambda x, w=w: baselines.apply_fitted(baselines.wiener, w, x),
                     f"window {w['kwargs']['size']} px, affine on val")

    def bm3d_scaled(x: np.ndarray, factor: float) -> np.ndarray:
        return baselines.bm3d_denoise(x, factor * baselines.estimate_noise_sigma(x))

    b = baselines.fit_on_validation(bm3d_scaled, [{"factor": f} for f in (1.0, 2.0)], xs[:8], ts[:8])
    out["BM3D"] = (lambda x, b=b: baselines.apply_fitted(bm3d_scaled, b, x),
                   f"σ = {b['kwargs']['factor']}× estimated, hard-thresholding stage, affine on val")
    return out


# ----------------------------------------------------------------------------------------------- scoring


def localize(img: np.ndarray, mode: str, thr: float) -> np.ndarray:
    return metrics.find_peaks(img if mode == "haadf" else 1.0 - img, min_distance_px=PEAK_MIN_DIST_PX,
                              threshold_rel=thr)


def best_threshold(outputs: list[np.ndarray], samples: list[dict], mode: str) -> float:
    scores = [np.mean([metrics.match_positions(localize(o, mode, t), s["positions"], MATCH_PX)["f1"]
                       for o, s in zip(outputs, samples)]) for t in THRESHOLDS]
    return float(THRESHOLDS[int(np.argmax(scores))])


def score(method: Callable, mode: str, val: list[dict], test: list[dict]) -> dict:
    thr = best_threshold([method(v["x"]) for v in val], val, mode)
    psnr, ssim, f1 = [], [], []
    t0 = time.perf_counter()
    for s in test:
        o = method(s["x"])
        psnr.append(metrics.psnr(o, s["target"], data_range=1.0))
        ssim.append(metrics.ssim(o, s["target"], data_range=1.0))
        f1.append(metrics.match_positions(localize(o, mode, thr), s["positions"], MATCH_PX)["f1"])
    return {"psnr": float(np.mean(psnr)), "psnr_std": float(np.std(psnr)), "ssim": float(np.mean(ssim)),
            "f1": float(np.mean(f1)), "peak_threshold_rel": thr, "n": len(test),
            "s_per_image": (time.perf_counter() - t0) / len(test)}


# ----------------------------------------------------------------------------------------------- speed / memory


def frame(size: int) -> np.ndarray:
    """A size² noisy HAADF frame (a 2048² synthetic frame tiled when larger)."""
    s = synthesize(SynthConfig(mode="haadf", size=min(size, 2048)), [TEST_SEED["haadf"], 10_000])["noisy"]
    reps = -(-size // s.shape[0])
    return np.tile(s, (reps, reps))[:size, :size].astype(np.float32)


def speed_child(size: int, model: str, threads: int) -> None:
    """Run in a fresh process: enhance one size² frame; print seconds and peak RSS (MB) as JSON."""
    torch.set_num_threads(threads)
    from sfin.api import enhancer

    img = frame(size)
    runner = enhancer(model)
    t0 = time.perf_counter()
    runner.run(img, mode=model)
    dt = time.perf_counter() - t0
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"size": size, "seconds": dt, "peak_rss_mb": rss_mb, "threads": threads}))


def speed(size: int, model: str = "haadf", threads: int = 2, timeout_s: float | None = None) -> dict:
    """Run :func:`speed_child` in a fresh process; its RSS is also sampled every second, so a run stopped at
    ``timeout_s`` still reports the peak RSS seen so far (``completed: false``)."""
    import psutil

    cmd = [sys.executable, __file__, "speed-child", "--size", str(size), "--model", model, "--threads", str(threads)]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak_mb = 0.0
    while proc.poll() is None:
        try:
            peak_mb = max(peak_mb, psutil.Process(proc.pid).memory_info().rss / 2**20)
        except psutil.Error:
            pass
        if timeout_s is not None and time.perf_counter() - t0 > timeout_s:
            proc.kill()
            proc.wait()
            return {"size": size, "completed": False, "elapsed_s": time.perf_counter() - t0,
                    "peak_rss_mb": peak_mb, "threads": threads}
        time.sleep(1.0)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"speed child failed: {err.strip().splitlines()[-1] if err.strip() else proc.returncode}")
    res = json.loads(out.strip().splitlines()[-1])
    res["completed"] = True
    return res


# ----------------------------------------------------------------------------------------------- U-Net training


def train_unet(mode: str, max_steps: int | None) -> None:
    """Train the U-Net baseline with the bundled SFIN model's trainer/data config (same steps, batch, patch,
    data stream and validation set) and export it to benchmarks/weights/sfin_unet_<mode>.pt + .json."""
    import yaml
    from baselines import UNetModule
    from em_noise.training import checkpoint_wall_time_s, evaluate, export_weights
    from lightning.pytorch.cli import LightningCLI
    from sfin.data import STEMDataModule

    cfg = yaml.safe_load((CONFIGS / f"{mode}.yaml").read_text())
    run_dir = ROOT / "runs" / "sfin" / f"unet_{mode}"
    cfg["model"] = {"width": 8, "depth": 3, "residual": False, "lr": cfg["model"]["lr"],
                    "milestones": cfg["model"]["milestones"], "gamma": cfg["model"]["gamma"]}
    if max_steps:
        cfg["trainer"]["max_steps"] = max_steps
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
    LightningCLI(UNetModule, STEMDataModule, args=args, save_config_kwargs={"overwrite": True})
    module = UNetModule.load_from_checkpoint(ckpt, map_location="cpu")
    dm = STEMDataModule(**cfg["data"])
    dm.setup("validate")
    val = evaluate(module.net, dm.val_dataloader())
    steps = int(torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"])
    card = {"name": f"sfin_unet_{mode}", "model": "em_noise.baselines.UNet",
            "model_config": {k: module.hparams[k] for k in ("width", "depth", "residual")},
            "parameters": sum(p.numel() for p in module.net.parameters()),
            "training": {"steps": steps, "wall_time_s": round(checkpoint_wall_time_s(ckpt) or 0.0, 1),
                         "config": f"packages/sfin/configs/{mode}.yaml with the model section replaced (see 'command')",
                         "command": f"OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py train-unet --mode {mode}",
                         "hardware": f"{os.cpu_count()}-core CPU, torch threads {torch.get_num_threads()}"},
            "data": cfg["data"], "validation": {"psnr_dB": round(val["psnr"], 3), "ssim": round(val["ssim"], 4),
                                                "n_images": val["n_images"]}}
    export_weights(module.net, WEIGHTS / f"sfin_unet_{mode}.pt", card)
    print(json.dumps(card["validation"]))


# ----------------------------------------------------------------------------------------------- the table


def cached(key: str, fn: Callable[[], dict], refresh: bool) -> dict:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"{key}.json"
    if path.is_file() and not refresh:
        return json.loads(path.read_text())
    res = fn()
    path.write_text(json.dumps(res, indent=1))
    return res


def run(n: int, refresh: bool, skip_8192: bool, only: list[str] | None, skip_speed: bool = False,
        speed_timeout_s: float | None = None) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    from em_noise.weights import bundled_dir
    from sfin.api import load_model

    rows: dict[str, dict[str, dict]] = {}
    notes: dict[str, dict[str, str]] = {}
    for mode in ("haadf", "bf"):
        val = load_set(mode, VAL_SEED, VAL_N)
        test = load_set(mode, TEST_SEED[mode], n)
        methods: dict[str, tuple[Callable, str]] = {"Noisy input": (lambda x: x, "normalized input, no processing")}
        methods.update(classical_methods(val))
        unet = load_unet(mode)
        if unet is not None:
            c = json.loads((WEIGHTS / f"sfin_unet_{mode}.json").read_text())
            methods["U-Net (equal budget)"] = (net_method(unet), f"{c['parameters']:,} params, "
                                               f"{c['training']['steps']} steps")
        if (bundled_dir("sfin") / f"{mode}.pt").is_file():
            net, c = load_model(mode)
            tile, ov = c.inference.tile_size, c.inference.overlap
            methods["SFIN (bundled)"] = (tiled_method(net, tile, ov),
                                         f"{c.parameters:,} params, {c.training.cumulative.steps} steps, "
                                         f"tiles {tile}/{ov} px (card)")
            methods["SFIN (bundled), whole image"] = (net_method(net), "one forward pass per image")
        for name, (fn, note) in methods.items():
            if only and not any(o.lower() in name.lower() for o in only):
                continue
            key = f"{mode}_{''.join(ch if ch.isalnum() else '_' for ch in name.lower())}_n{n}"
            print(f"[{mode}] {name} ...", file=sys.stderr, flush=True)
            rows.setdefault(name, {})[mode] = cached(key, lambda fn=fn: score(fn, mode, val, test), refresh)
            notes.setdefault(name, {})[mode] = note
    perf = {}
    if not skip_speed:
        perf["2048"] = cached("speed_2048", lambda: speed(2048), refresh)
    if not skip_speed and not skip_8192:
        perf["8192"] = cached("speed_8192", lambda: speed(8192, timeout_s=speed_timeout_s), refresh)
    write_table(rows, notes, perf, n)


def write_table(rows: dict, notes: dict, perf: dict, n: int) -> None:
    def cell(r: dict | None, key: str, fmt: str) -> str:
        return format(r[key], fmt) if r else "—"

    lines = [
        "# SFIN benchmark",
        "",
        f"Produced by `OMP_NUM_THREADS=1 uv run python benchmarks/sfin_bench.py run` on {platform.node() or 'this machine'} "
        f"({os.cpu_count()}-core CPU, shared), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        "",
        f"Test sets: {n} HAADF and {n} BF {SIZE}² images from em_noise.synth, seeds {TEST_SEED['haadf']} / "
        f"{TEST_SEED['bf']} (never used in training). Reference: em-noise's enhancement target in [0, 1]; the noisy "
        "input is normalized by its 0.1/99.9 percentiles exactly as the networks' input; PSNR (dB) / SSIM with data "
        "range 1 (mean over images). Classical filters: parameters and an affine intensity map fitted on the "
        f"validation set ({VAL_N} images, seed {VAL_SEED}). F1: find_peaks on the output (BF inverted), threshold "
        f"chosen on the validation set per method, matched within {MATCH_PX:g} px. SFIN runs as `sfin-enhance` "
        "does, in tiles of its 64 px training patch (16 px overlap, from the model card): on the validation set this "
        "beats one whole-image pass, because the Fourier branch is tuned to the field of view it was trained on "
        "(the whole-image row shows the difference). The U-Net is local, so tiling does not change it.",
        "",
        "| Method | HAADF PSNR | HAADF SSIM | HAADF F1 | BF PSNR | BF SSIM | BF F1 | Settings |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in rows.items():
        h, b = r.get("haadf"), r.get("bf")
        note = "; ".join(f"{m}: {v}" for m, v in notes[name].items()) if len(set(notes[name].values())) > 1 \
            else next(iter(notes[name].values()))
        lines.append(f"| {name} | {cell(h, 'psnr', '.2f')} | {cell(h, 'ssim', '.3f')} | {cell(h, 'f1', '.3f')} | "
                     f"{cell(b, 'psnr', '.2f')} | {cell(b, 'ssim', '.3f')} | {cell(b, 'f1', '.3f')} | {note} |")
    lines += ["", "Speed and memory (bundled `haadf` model as `sfin-enhance` runs it: `sfin.enhance.enhance_array` "
              "with the card's tiling, torch threads 2, fresh process each):", ""]
    for size, p in perf.items():
        if p.get("completed", True):
            lines.append(f"- {size}² frame: {p['seconds']:.1f} s, peak RSS {p['peak_rss_mb']:.0f} MB")
        else:
            lines.append(f"- {size}² frame: stopped unfinished after {p['elapsed_s']:.0f} s (time limit); peak RSS "
                         f"sampled until then {p['peak_rss_mb']:.0f} MB")
    for size in ("2048", "8192"):
        if size not in perf:
            lines.append(f"- {size}² frame: not measured in this run")
    lines += ["", PAPER, ""]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    r = sub.add_parser("run", help="compute the table")
    r.add_argument("--n", type=int, default=100, help="test images per mode")
    r.add_argument("--refresh", action="store_true", help="ignore cached per-method results")
    r.add_argument("--skip-8192", action="store_true", help="skip the 8192² memory measurement")
    r.add_argument("--skip-speed", action="store_true", help="skip the speed/memory measurements")
    r.add_argument("--speed-timeout", type=float, default=None,
                   help="stop the 8192² run after this many seconds (reports the peak RSS sampled so far)")
    r.add_argument("--only", nargs="*", default=None, help="only methods whose name contains one of these")
    t = sub.add_parser("train-unet", help="train + export the equal-budget U-Net baseline")
    t.add_argument("--mode", choices=("haadf", "bf"), required=True)
    t.add_argument("--max-steps", type=int, default=None, help="override (default: the SFIN config's max_steps)")
    c = sub.add_parser("speed-child")
    c.add_argument("--size", type=int, required=True)
    c.add_argument("--model", default="haadf")
    c.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    if args.cmd == "run":
        run(args.n, args.refresh, args.skip_8192, args.only, args.skip_speed, args.speed_timeout)
    elif args.cmd == "train-unet":
        train_unet(args.mode, args.max_steps)
    else:
        speed_child(args.size, args.model, args.threads)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
