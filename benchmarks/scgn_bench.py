"""SCGN benchmark on synthetic HRTEM frames -> benchmarks/results/scgn.md.

    OMP_NUM_THREADS=1 uv run python benchmarks/scgn_bench.py train unet   # equal-budget baselines
    OMP_NUM_THREADS=1 uv run python benchmarks/scgn_bench.py train sfin
    OMP_NUM_THREADS=1 uv run python benchmarks/scgn_bench.py run          # evaluate everything, write the table

Test sets (never trained or tuned on): (1) nucleation structures (amorphous matrix + crystalline nuclei), 256² px,
100 frames at each of 20, 200 and 2000 e/Å² (other noise parameters from em-noise's HRTEM distribution), seeds
[TEST_SEED, i]; (2) 100 frames of default `em-noise synth --mode hrtem` (all structure kinds, the noise model's own
dose draw), seeds [DEFAULT_SEED, i]. Training uses seeds [0, i], its validation [900000001, i].
Tuning set: 16 frames per test condition, seeds [VAL_SEED, i]: the Gaussian σ, BM3D's level, their affine
intensity map, and every method's detection settings (column contrast and peak threshold) are chosen there.

Methods: noisy input; Gaussian filter (best σ); BM3D; a U-Net and SFIN trained on SCGN's data, frame size, batch,
schedule and number of steps (one output, the denoised frame; `train`); the shipped SCGN `hrtem`. Two ceiling
rows (columns only): bright peaks of each test sample's aberration-free noise-free image (em_noise.reference: the
potential through the magnitude of its transfer function), with and without the lattice gate, threshold chosen on
the tuning frames: how well the information that reaches the detector places the columns.
Image metrics against the clean target in the networks' [0, 1] scale: PSNR (dB), SSIM, IoU of both maps binarized
at half their min–max range (the papers' metric) and at half the range between their 0.5th and 99.5th percentiles
("IoU clip"). Columns: precision / recall / F1 of detected columns matched within 2 px to the true columns of the
crystalline regions (amorphous-matrix atoms are not columns). SCGN: end to end, as `scgn-denoise --atoms` finds
them (its atom-map output, lattice gate, scgn.api.process). Other methods: peaks of their output of the contrast
and threshold chosen on the tuning set (dark or bright), with the same lattice gate.
BM3D (slow on CPU) is scored on the first --bm3d-frames test frames; the table then also gives SCGN on those
frames, so that the two are compared on the same frames.
Speed: FLOPs per pixel (benchmarks/flops.py), measured fp32 matmul throughput, time per 2048² frame as
`scgn-denoise` runs it (2 threads) and its ratio to the FLOP floor.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
import baselines  # noqa: E402  (benchmarks/baselines.py)
from flops import flops_per_pixel, machine_gflops  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
BASE_CONFIG = ROOT / "packages/scgn/src/scgn/configs/hrtem.yaml"
RESULT = ROOT / "benchmarks/results/scgn.md"
WEIGHTS = ROOT / "benchmarks/weights"
CACHE = ROOT / "runs/scgn/bench/cache"
TEST_SEED, DEFAULT_SEED, VAL_SEED = 777_000_001, 778_000_001, 900_300_001
DOSES = (20.0, 200.0, 2000.0)
N_TEST, N_VAL, SIZE = 100, 16, 256
MATCH_PX = 2.0
BASELINES = {"unet": "U-Net (equal budget)", "sfin": "SFIN (equal budget)"}
IOU_CLIP_PERCENT = 0.5
THRESHOLDS = (0.3, 0.4, 0.5, 0.6)
SCGN = "SCGN (shipped)"
CEILINGS = {"Ceiling: aberration-free noise-free image, lattice gate": True,
            "Ceiling: aberration-free noise-free image, no gate": False}
PAPER = ("Paper reference (NUC set, GPU, full budget): SCGN 26.55 dB / 0.972, IoU 0.732; SFIN 25.70 / 0.967, "
         "IoU 0.712; AtomSegNet 23.44 dB.")


# ----------------------------------------------------------------------------------------------- training

def shipped_card():
    from scgn.api import load_model

    return load_model("hrtem")[1]


def merged_config(name: str, steps: int) -> Path:
    """SCGN's hrtem.yaml (trainer, data, optimizer, schedule) with the network swapped for
    benchmarks/configs/scgn_<name>.yaml, one output (the denoise target), ``steps`` steps."""
    base = yaml.safe_load(BASE_CONFIG.read_text())
    net = yaml.safe_load((ROOT / f"benchmarks/configs/scgn_{name}.yaml").read_text())["model"]
    optim = {k: base["model"][k] for k in ("lr", "milestones", "gamma") if k in base["model"]}
    base["model"] = {"class_path": net["class_path"], "init_args": {**net.get("init_args", {}), **optim}}
    base["data"]["target"] = "denoise"
    base["trainer"]["max_steps"] = int(steps)
    text = yaml.safe_dump(base, sort_keys=False).replace("runs/scgn/hrtem", f"runs/scgn/bench_{name}")
    out = ROOT / f"runs/scgn/bench_{name}/config.yaml"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    return out


def train(name: str, steps: int | None) -> None:
    """Fit a baseline with SCGN's budget (its cumulative steps unless ``steps``), export to benchmarks/weights/.
    A run stopped short of the budget also leaves its training state there (scgn_<name>_hrtem.ckpt), from which
    the next ``train`` resumes on a fresh clone."""
    from em_noise.training import RestorationModule, checkpoint_wall_time_s, export_weights, hardware
    from lightning.pytorch.cli import LightningCLI
    from scgn.data import HRTEMDataModule

    budget = int(shipped_card().training.cumulative.steps)
    steps = int(steps or budget)
    cfg = merged_config(name, steps)
    ckpt = ROOT / f"runs/scgn/bench_{name}/checkpoints/last.ckpt"
    resume = WEIGHTS / f"scgn_{name}_hrtem.ckpt"
    if not ckpt.is_file() and resume.is_file():
        ckpt.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(resume, ckpt)
    args = ["fit", "--config", str(cfg)] + (["--ckpt_path", str(ckpt)] if ckpt.is_file() else [])
    cli = LightningCLI(RestorationModule, HRTEMDataModule, subclass_mode_model=True, seed_everything_default=0,
                       args=args, save_config_kwargs={"overwrite": True})
    cli.trainer.save_checkpoint(ckpt)  # the final step (periodic checkpoints fall on multiples of 250)
    obj = torch.load(ckpt, map_location="cpu", weights_only=False)
    class_path = yaml.safe_load(cfg.read_text())["model"]["class_path"]
    net = _module_from_ckpt(ckpt, class_path).net
    card = {"name": f"scgn_{name}_hrtem", "network": BASELINES[name], "class_path": class_path,
            "hyper_parameters": {k: v for k, v in obj["hyper_parameters"].items() if not k.startswith("_")},
            "parameters": sum(p.numel() for p in net.parameters()),
            "config": {"base": str(BASE_CONFIG.relative_to(ROOT)), "network": f"benchmarks/configs/scgn_{name}.yaml"},
            "steps": int(obj["global_step"]), "wall_time_s": round(checkpoint_wall_time_s(ckpt) or 0.0, 1),
            "hardware": hardware(), "produced_by": f"uv run python benchmarks/scgn_bench.py train {name}"}
    export_weights(net, WEIGHTS / f"scgn_{name}_hrtem.pt", card)
    if card["steps"] < budget:  # short of SCGN's budget: keep the training state so a later session resumes it
        shutil.copyfile(ckpt, resume)
    else:
        resume.unlink(missing_ok=True)
    print(f"exported {WEIGHTS / f'scgn_{name}_hrtem.pt'} ({card['steps']} steps, {card['wall_time_s']} s)")


def _module_from_ckpt(ckpt: Path, class_path: str):
    import importlib

    mod, cls = class_path.rsplit(".", 1)
    return getattr(importlib.import_module(mod), cls).load_from_checkpoint(ckpt, map_location="cpu")


def load_baseline(name: str) -> tuple[torch.nn.Module, dict] | None:
    import importlib

    pt = WEIGHTS / f"scgn_{name}_hrtem.pt"
    if not pt.is_file():
        return None
    card = json.loads(pt.with_suffix(".json").read_text())
    mod, cls = card["class_path"].rsplit(".", 1)
    hp = {k: v for k, v in card["hyper_parameters"].items() if k not in ("init_from",)}
    owner = baselines if mod in ("em_noise.baselines", "baselines") else importlib.import_module(mod)
    module = getattr(owner, cls)(**hp)
    module.net.load_state_dict(torch.load(pt, map_location="cpu", weights_only=True))
    return module.net.eval(), card


# ----------------------------------------------------------------------------------------------- data

def test_cfg(dose: float | None):
    from em_noise.synth import SynthConfig

    if dose is None:  # default `em-noise synth --mode hrtem`
        return SynthConfig(mode="hrtem", size=SIZE)
    return SynthConfig(mode="hrtem", size=SIZE, structures={"nucleation": 1.0}, dose_e_per_A2=(dose, dose))


def frames(dose: float | None, seed: int, n: int) -> list[dict]:
    """n samples: raw noisy frame, network input x, denoise target y, true column positions (px) and the
    aberration-free noise-free image (em_noise.reference, for the localisation ceiling)."""
    from em_noise.reference import hrtem_reference
    from em_noise.synth import make_pair, synthesize

    cfg, out = test_cfg(dose), []
    for i in range(n):
        s = synthesize(cfg, [seed, i])
        x, y = make_pair(s, "denoise")
        out.append({"noisy": s["noisy"], "x": x, "y": y, "positions": s["positions"],
                    "reference": hrtem_reference(cfg, [seed, i])})
    return out


# ----------------------------------------------------------------------------------------------- methods

def whole_frame(net: torch.nn.Module):
    net.eval()

    @torch.no_grad()
    def apply(x: np.ndarray) -> np.ndarray:
        return net(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))[None, None])[0, 0].numpy()

    return apply


def scgn_method():
    """The shipped SCGN as scgn-denoise runs it: (denoised frame in the [0, 1] scale of x, its column table)."""
    from scgn.api import prepare, process

    runner, amap = prepare("hrtem", atoms=True)

    def apply(d: dict) -> tuple[np.ndarray, np.ndarray]:
        denoised, table = process(runner, amap, d["x"], atoms=True)
        return denoised, table.xy_px

    return apply, runner.card


def gated_peaks(image: np.ndarray, raw: np.ndarray, contrast: str, thr: float) -> np.ndarray:
    """Peaks of ``image`` of the given contrast, kept where scgn's lattice gate sees a lattice."""
    from scgn import localize

    table = localize.locate_columns(raw[None], image[None], None, contrast=contrast, threshold=thr)
    return table.xy_px


def ceiling_peaks(d: dict, thr: float, gate: bool) -> np.ndarray:
    """Bright peaks of a sample's aberration-free noise-free image, with or without the lattice gate."""
    from scgn import localize

    table = localize.locate_columns(d["noisy"][None], d["reference"][None], None, contrast="bright", threshold=thr,
                                    lattice=gate)
    return table.xy_px


def choose_detection(outputs: list[np.ndarray], val: list[dict]) -> tuple[str, float]:
    """(contrast, threshold) with the best mean F1 on the tuning frames."""
    from em_noise import metrics

    best, score = ("dark", THRESHOLDS[0]), -1.0
    for contrast in ("dark", "bright"):
        for thr in THRESHOLDS:
            f1 = np.mean([metrics.match_positions(gated_peaks(o, v["noisy"], contrast, thr), v["positions"],
                                                  MATCH_PX)["f1"] for o, v in zip(outputs, val)])
            if f1 > score:
                best, score = (contrast, thr), f1
    return best


def image_scores(o: np.ndarray, d: dict) -> dict:
    from em_noise import metrics

    return {"psnr": metrics.psnr(o, d["y"], data_range=1.0), "ssim": metrics.ssim(o, d["y"], data_range=1.0),
            "iou": metrics.binarized_iou(o, d["y"]),
            "iou_clip": metrics.binarized_iou(o, d["y"], clip_percent=IOU_CLIP_PERCENT)}


def column_scores(xy: np.ndarray, d: dict) -> dict:
    from em_noise import metrics

    m = metrics.match_positions(xy, d["positions"], MATCH_PX)
    return {"precision": m["precision"], "recall": m["recall"], "f1": m["f1"]}


def mean_rows(rows: list[dict]) -> dict:
    return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]} | {"n": len(rows)}


def _slug(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name.lower())


def evaluate_condition(dose: float | None, n: int, bm3d_frames: int, nets: dict, scgn, refresh: bool = False) -> dict:
    """Scores of every method on one test condition; each method's scores are cached in CACHE (the shipped SCGN
    under its card's export time, so that new weights are scored afresh)."""
    key = "default" if dose is None else f"{dose:g}"
    test = frames(dose, DEFAULT_SEED if dose is None else TEST_SEED, n)
    val = frames(dose, VAL_SEED + (0 if dose is None else int(dose)), N_VAL)
    vx, vy = [d["x"] for d in val], [d["y"] for d in val]

    def gaussian():
        g = baselines.gaussian_filter_best(vx, vy)
        return (lambda x: baselines.apply_fitted(baselines.gaussian_filter, g, x)), f"σ={g['kwargs']['sigma_px']} px"

    def bm3d():
        b = baselines.fit_on_validation(baselines.bm3d_scaled, [{"factor": f} for f in (1.0, 2.0)], vx[:4], vy[:4])
        note = f"σ = {b['kwargs']['factor']}× estimated"
        return (lambda x: baselines.apply_fitted(baselines.bm3d_scaled, b, x)), note

    methods: dict[str, object] = {"Noisy input": lambda: ((lambda x: x), ""), "Gaussian filter (best σ)": gaussian}
    if bm3d_frames > 0:
        methods["BM3D"] = bm3d
    for label, fn in nets.items():
        methods[label] = lambda fn=fn: (fn, "")
    res: dict[str, dict] = {}
    for name, fit in methods.items():
        path = CACHE / f"{key}_n{n}_{_slug(name)}.json"
        if path.is_file() and not refresh:
            res[name] = json.loads(path.read_text())
            continue
        fn, note = fit()
        subset = test[:bm3d_frames] if name == "BM3D" else test
        contrast, thr = choose_detection([fn(v["x"]) for v in val], val)
        rows = []
        for d in subset:
            o = fn(d["x"])
            rows.append(image_scores(o, d) | column_scores(gated_peaks(o, d["noisy"], contrast, thr), d))
        res[name] = mean_rows(rows) | {"note": f"{note}{'; ' if note else ''}columns: {contrast}, threshold {thr}"}
        path.write_text(json.dumps(res[name], indent=1))
        print(f"  {name}: {res[name]['psnr']:.2f} dB, F1 {res[name]['f1']:.3f}", file=sys.stderr, flush=True)
    for name, gate in CEILINGS.items():
        thr = max(THRESHOLDS, key=lambda t: np.mean([column_scores(
            ceiling_peaks(v, t, gate), v)["f1"] for v in val]))
        rows = [column_scores(ceiling_peaks(d, thr, gate), d) for d in test]
        res[name] = mean_rows(rows) | {"note": f"columns: bright, threshold {thr}"}
    if scgn is None:
        return res
    apply, card = scgn
    path = CACHE / f"{key}_n{n}_scgn_{_slug(card.created_utc or '')}.json"
    k = min(bm3d_frames, n)  # BM3D's frames, on which SCGN is also scored
    if path.is_file() and not refresh:
        cached = json.loads(path.read_text())
        if cached.get("subset", {}).get("n", 0) == k:
            res[SCGN] = cached
            return res
    rows = []
    for d in test:
        denoised, xy = apply(d)
        rows.append(image_scores(denoised, d) | column_scores(xy, d))
    res[SCGN] = mean_rows(rows) | {"note": "end to end: scgn-denoise --atoms (atom-map output, lattice gate)",
                                   "subset": mean_rows(rows[:k]) if k else {}}
    path.write_text(json.dumps(res[SCGN], indent=1))
    print(f"  {SCGN}: {res[SCGN]['psnr']:.2f} dB, F1 {res[SCGN]['f1']:.3f}", file=sys.stderr, flush=True)
    return res


# ----------------------------------------------------------------------------------------------- speed

def speed_child(size: int, threads: int) -> None:
    torch.set_num_threads(threads)
    import scgn

    rng = np.random.default_rng(0)
    img = rng.random((size, size), dtype=np.float32)
    scgn.denoise(img[:64, :64])
    t0 = time.perf_counter()
    scgn.denoise(img)
    print(json.dumps({"size": size, "seconds": time.perf_counter() - t0, "threads": threads}))


def speed(size: int = 2048, threads: int = 2) -> dict:
    cmd = [sys.executable, __file__, "speed-child", "--size", str(size), "--threads", str(threads)]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"speed child failed: {proc.stderr.strip().splitlines()[-1:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------- run + table

def run(args: argparse.Namespace) -> None:
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    CACHE.mkdir(parents=True, exist_ok=True)
    scgn = scgn_method()
    card = scgn[1]
    nets, budgets = {}, {}
    for key, label in BASELINES.items():
        loaded = load_baseline(key)
        if loaded is not None and loaded[1]["steps"] != card.training.cumulative.steps:
            label = label.replace("equal budget", f"{loaded[1]['steps']} steps, not SCGN's budget")
        if loaded is not None:
            nets[label] = whole_frame(loaded[0])
            budgets[label] = loaded[1]
    results: dict[str, dict] = {}
    for dose in (*DOSES, None):
        key = "default" if dose is None else f"{dose:g}"
        print(f"[{key}]", file=sys.stderr, flush=True)
        results[key] = evaluate_condition(dose, args.frames, min(args.bm3d_frames, args.frames), nets,
                                          None if args.baselines_only else scgn, refresh=args.refresh)
    if args.baselines_only:
        return
    from scgn.api import load_model

    perf = {"flops_per_px": flops_per_pixel(load_model("hrtem")[0]), "gflops_2": machine_gflops(2),
            "gflops_1": machine_gflops(1)}
    if not args.no_speed:
        perf |= speed()
    write_table(results, perf, card, budgets, args)


def run_flags(args: argparse.Namespace) -> str:
    """The command-line flags of a run that differ from the defaults, as typed."""
    flags = [f" --frames {args.frames}"] if args.frames != N_TEST else []
    flags += [f" --bm3d-frames {args.bm3d_frames}"] if args.bm3d_frames != N_TEST else []
    return "".join(flags + [" --no-speed"] * bool(args.no_speed) + [" --refresh"] * bool(args.refresh))


def write_table(results: dict, perf: dict, card, budgets: dict, args) -> None:
    from em_noise.training import hardware

    lines = ["# SCGN benchmark — synthetic HRTEM", "",
             f"Produced by `OMP_NUM_THREADS=1 uv run python benchmarks/scgn_bench.py run{run_flags(args)}` on "
             f"{hardware()}, "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. See the script's docstring for the test and "
             "tuning sets (disjoint from training and from each other) and the metrics. PSNR (dB) / SSIM / IoU against "
             f"the clean target (data range 1); P / R / F1: columns matched within {MATCH_PX:g} px.", ""]
    for key, res in results.items():
        title = ("default `em-noise synth --mode hrtem` frames (all structure kinds, the noise model's dose draw)"
                 if key == "default" else f"nucleation frames at {key} e/Å²")
        lines += [f"## {title}", "",
                  "| method | PSNR | SSIM | IoU | IoU clip | precision | recall | F1 | frames | settings |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for name, r in res.items():
            img = " | ".join(f"{r[k]:.{d}f}" if k in r else "—" for k, d in
                             (("psnr", 2), ("ssim", 3), ("iou", 3), ("iou_clip", 3)))
            lines.append(f"| {name} | {img} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['n']} | "
                         f"{r['note']} |")
        sub, bm = res.get(SCGN, {}).get("subset"), res.get("BM3D")
        if sub and bm and sub["n"] == bm["n"] != res[SCGN]["n"]:
            lines += ["", f"On the {sub['n']} frames BM3D is scored on: SCGN {sub['psnr']:.2f} dB / {sub['ssim']:.3f}, "
                      f"BM3D {bm['psnr']:.2f} dB / {bm['ssim']:.3f} (SCGN − BM3D {sub['psnr'] - bm['psnr']:+.2f} dB)."]
        lines.append("")
    dose_keys = [k for k in results if k != "default"]
    lines += ["## mean over the three doses", "", "| method | PSNR | SSIM | IoU | IoU clip | F1 |",
              "|---|---|---|---|---|---|"]
    for name in results[dose_keys[0]]:
        vals = [results[k][name] for k in dose_keys if name in results[k]]
        m = " | ".join(f"{np.mean([v[k] for v in vals]):.{d}f}" if k in vals[0] else "—" for k, d in
                       (("psnr", 2), ("ssim", 3), ("iou", 3), ("iou_clip", 3), ("f1", 3)))
        lines.append(f"| {name} | {m} |")
    fpp = perf["flops_per_px"]
    lines += ["", "## speed", "", f"SCGN `hrtem`: {fpp / 1e6:.3f} MFLOP per pixel (convolutions + FFTs). This "
              f"machine's fp32 matmul: {perf['gflops_1']:.0f} GFLOP/s on 1 thread, {perf['gflops_2']:.0f} on 2."]
    if "seconds" in perf:
        floor = fpp * 2048**2 / (perf["gflops_2"] * 1e9)
        lines.append(f"- 2048² frame as scgn-denoise runs it ({perf['threads']} threads): {perf['seconds']:.1f} s; "
                     f"FLOP floor {floor:.1f} s (ratio {perf['seconds'] / floor:.1f}×)")
    lines += ["", "## training budget", "",
              f"- SCGN `hrtem`: {card.parameters:,} parameters, {card.training.cumulative.steps} steps, "
              f"{card.training.cumulative.wall_time_s:.0f} s cumulative (config {card.training.config})"]
    for label, c in budgets.items():
        lines.append(f"- {label}: {c['parameters']:,} parameters, {c['steps']} steps, {c['wall_time_s']:.0f} s "
                     f"(SCGN's config with the network of {c['config']['network']})")
    lines += ["", PAPER, ""]
    RESULT.write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train an equal-budget baseline on the HRTEM data")
    t.add_argument("name", choices=sorted(BASELINES))
    t.add_argument("--steps", type=int, default=None, help="default: the shipped SCGN's cumulative steps")
    r = sub.add_parser("run", help="evaluate all methods and write benchmarks/results/scgn.md")
    r.add_argument("--frames", type=int, default=N_TEST, help="test frames per condition")
    r.add_argument("--bm3d-frames", type=int, default=N_TEST, help="frames per condition for BM3D (slow on CPU)")
    r.add_argument("--no-speed", action="store_true")
    r.add_argument("--refresh", action="store_true", help="ignore cached per-method scores")
    r.add_argument("--baselines-only", action="store_true",
                   help="score (and cache) the methods other than the shipped SCGN, write no table")
    c = sub.add_parser("speed-child")
    c.add_argument("--size", type=int, default=2048)
    c.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    if args.cmd == "train":
        train(args.name, args.steps)
    elif args.cmd == "run":
        run(args)
    else:
        speed_child(args.size, args.threads)


if __name__ == "__main__":
    main()
