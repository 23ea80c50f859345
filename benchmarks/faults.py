"""The bad-input and fault matrix of every CLI: each case runs the real console script in a subprocess on tiny files.

A case passes when the command keeps the toolkit's promise: the expected exit code (2 bad input or unusable output
path, 1 a resource ran out, 130 Ctrl-C, 143 SIGTERM), exactly one stderr line naming the file, no traceback,
nothing left behind and every input byte unchanged; after a ``kill -9`` a rerun without ``--overwrite`` completes
with no temp file and the whole set of outputs. Writes ``benchmarks/results/faults.md``.

Example (a few minutes on two busy cores):
    OMP_NUM_THREADS=1 uv run python benchmarks/faults.py
    uv run python benchmarks/faults.py -k denza          # only cases whose name contains 'denza'
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from em_noise.io import write_image
from em_noise.testing import (
    Result,
    can_make_read_only,
    has_loaded,
    interrupt,
    read_only,
    run_cli,
    script,
    snapshot,
    temp_files,
)

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Case:
    """``args(d)`` gives the command in the case folder ``d`` (prepared by ``setup``); see the module docstring."""

    name: str
    args: Callable[[Path], list]
    code: int = 2
    needle: str | Callable[[Path], str] = ""
    setup: Callable[[Path], None] | None = None
    fsize: int | None = None
    sig: int | None = None  # sent once ``when`` holds
    when: Callable[[Path], Callable[[int], bool]] | None = None
    ro: str | None = None  # a sub-folder made read-only for the run
    rerun_outputs: tuple[str, ...] = ()  # kill -9 cases: the rerun must leave exactly these new files
    keeps: Callable[[dict, dict], bool] | None = None  # own check of (before, after) snapshots
    stdout: str | None = None  # expected stdout line (exit 0 cases)
    tags: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------- inputs


def _fixtures(base: Path) -> dict[str, Path]:
    """Tiny models and files, made once and copied into each case folder."""
    import torch
    from denza_gaussian.phantoms import make_phantom, simulate_tilts, tilt_angles
    from em_noise.params import default_params
    from em_noise.synth import SynthConfig, synthesize
    from em_noise.weights import Architecture, ModelCard, io_for, save
    from scgn.model import SCGN
    from sfin.model import SFIN

    f = base / "fixtures"
    f.mkdir()
    torch.manual_seed(0)
    torch.save(SFIN(width=8, blocks=1).state_dict(), f / "sfin_tiny.pt")
    net = SCGN(width=8, n_blocks=1, out_channels=1)
    card = ModelCard(name="tiny", architecture=Architecture(cls="scgn.model.SCGN", config=net.config.model_dump()),
                     parameters=0, io=io_for("hrtem", "denoise"), field_of_view_px=64)
    save(net, f / "scgn_tiny.pt", card)
    write_image(f / "haadf.tif", synthesize(SynthConfig(mode="haadf", size=96), [1, 0])["noisy"], pixel_size_A=0.3)
    write_image(f / "hrtem.tif", synthesize(SynthConfig(mode="hrtem", size=64), 7)["noisy"], pixel_size_A=0.2)
    stack = np.random.default_rng(0).integers(0, 4000, (60, 256, 256)).astype(np.uint16)
    write_image(f / "long.tif", stack)
    angles = tilt_angles(9, 60.0)
    sim = simulate_tilts(make_phantom("faceted", 24, seed=0), angles, peak_counts=500.0, background_counts=5.0)
    write_image(f / "tilts.mrc", sim["noisy"], pixel_size_A=3.0, volume=False)
    (f / "tilts.tlt").write_text("".join(f"{a:.3f}\n" for a in angles))
    for key, value, mode, name in (("pointwise.lam", 50.0, "haadf", "lam50.json"),
                                   ("read_sigma", -1.0, "haadf", "negstd.json"),
                                   ("column.sigma", -0.5, "hrtem", "neghrtem.json"), (None, None, "haadf", "ok.json")):
        data = default_params(mode).to_dict()
        if key:
            group, _, k = key.rpartition(".")
            (data[group] if group else data)[k] = value
        (f / name).write_text(json.dumps(data))
    (f / "malformed.json").write_text("{not json")
    a = np.ones((16, 16), np.float32)
    a[0, 0] = np.nan
    np.save(f / "nan.npy", a)
    np.save(f / "4d.npy", np.ones((2, 2, 16, 16), np.float32))
    from PIL import Image

    rgb = np.zeros((32, 32, 3), np.uint8)
    rgb[..., 0] = 200
    Image.fromarray(rgb).save(f / "rgb.png")
    Image.fromarray((np.random.default_rng(1).random((96, 96)) * 50000 + 1000).astype(np.uint16)).save(f / "p16.png")
    (f / "junk.tif").write_bytes(b"this is not a tiff")
    (f / "junk.mrc").write_bytes(b"\x00\x01" * 300)
    (f / "trunc.mrc").write_bytes(b"\x00" * 1100)
    (f / "empty.mrc").write_bytes(b"")
    (f / "notes.txt").write_text("x")
    (f / "afile").write_text("a file, not a folder")
    return {p.name: p for p in f.iterdir()}


def _copy(names: tuple[str, ...]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for n in names:
            src = FIX[n]
            (d / n).write_bytes(src.read_bytes())
            if n.endswith(".pt") and src.with_suffix(".json").exists():
                (d / src.with_suffix(".json").name).write_bytes(src.with_suffix(".json").read_bytes())
    return setup


def _and(*fns: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(d: Path) -> None:
        for fn in fns:
            fn(d)
    return setup


def _synth_samples(d: Path) -> None:
    res = run_cli([script("em-noise"), "synth", "--mode", "haadf", "--count", "2", "--size", "48", "-o", d / "s"])
    assert res.code == 0, res.stderr


def _busy(delay: float, marker: str | None = None) -> Callable[[Path], Callable[[int], bool]]:
    """Send the signal ``delay`` s after the child loaded torch (or after ``marker`` appeared in the case folder)."""
    def make(d: Path) -> Callable[[int], bool]:
        t: list[float] = []

        def ready(pid: int) -> bool:
            if not t and ((d / marker).exists() if marker else has_loaded(pid)):
                t.append(time.monotonic())
            return bool(t) and time.monotonic() - t[0] > delay
        return ready
    return make


def _temp_appears(sub: str = ".") -> Callable[[Path], Callable[[int], bool]]:
    return lambda d: (lambda pid: bool(temp_files(d / sub)))


FIX: dict[str, Path] = {}
EN, SF, SC, DZ = "em-noise", "sfin-enhance", "scgn-denoise", "denza-recon"
SFM = ["--model", "sfin_tiny.pt", "-q", "--device", "cpu"]
SCM = ["--model", "scgn_tiny.pt", "-q", "--device", "cpu"]
SYN = ["synth", "--mode", "haadf", "--size", "48"]
TINY_FIT = """seed_everything: 0
trainer: {{accelerator: cpu, devices: 1, max_steps: {steps}, max_epochs: -1, num_sanity_val_steps: 0, logger: false,
  enable_progress_bar: false, enable_model_summary: false, default_root_dir: {d},
  callbacks: [{{class_path: lightning.pytorch.callbacks.ModelCheckpoint,
               init_args: {{dirpath: {d}/ckpt, save_last: true, save_top_k: 0}}}}]}}
model: {{width: 8, blocks: 1}}
data: {{mode: bf, patch: 32, epoch_length: 8, batch_size: 4, val_length: 2, val_size: 40}}
"""


def _fit_config(steps: int) -> Callable[[Path], None]:
    return lambda d: (d / "tiny.yaml").write_text(TINY_FIT.format(steps=steps, d=d))


def cases() -> list[Case]:
    c: list[Case] = []
    add = c.append
    # em-noise
    add(Case(f"{EN} calibrate missing file", lambda d: [EN, "calibrate", "missing.tif", "--mode", "haadf"],
             needle="missing.tif"))
    for n in ("junk.mrc", "nan.npy", "empty.mrc", "notes.txt", "rgb.png", "4d.npy"):
        add(Case(f"{EN} calibrate {n}", lambda d, n=n: [EN, "calibrate", n, "--mode", "haadf"], needle=n,
                 setup=_copy((n,))))
    add(Case(f"{EN} calibrate -o onto its input --overwrite",
             lambda d: [EN, "calibrate", "haadf.tif", "--mode", "haadf", "-o", "haadf.tif", "--overwrite"],
             needle="haadf.tif", setup=_copy(("haadf.tif",))))
    add(Case(f"{EN} calibrate -o a link to its input --overwrite",
             lambda d: [EN, "calibrate", "haadf.tif", "--mode", "haadf", "-o", "link.tif", "--overwrite"],
             needle="link.tif", setup=_and(_copy(("haadf.tif",)), lambda d: (d / "link.tif").symlink_to("haadf.tif"))))
    add(Case(f"{EN} synth --noise among its own outputs --overwrite",
             lambda d: [EN, *SYN, "--count", "2", "--noise", "s/0000.json", "-o", "s", "--overwrite"],
             needle="0000.json", setup=_synth_samples))
    for n, key in (("lam50.json", "pointwise.lam"), ("negstd.json", "read_sigma"), ("malformed.json", "JSON"),
                   ("missing.json", "no such file")):
        add(Case(f"{EN} synth --noise {n}", lambda d, n=n: [EN, *SYN, "--count", "1", "--noise", n, "-o", "o"],
                 needle=key, setup=_copy((n,)) if n != "missing.json" else None))
    add(Case(f"{EN} synth --noise neghrtem.json (negative HRTEM sigma)",
             lambda d: [EN, "synth", "--mode", "hrtem", "--size", "48", "--noise", "neghrtem.json", "-o", "o"],
             needle="column.sigma", setup=_copy(("neghrtem.json",))))
    add(Case(f"{EN} synth -o a file", lambda d: [EN, *SYN, "--count", "1", "-o", "afile"], needle="afile",
             setup=_copy(("afile",))))
    add(Case(f"{EN} synth -o a read-only folder", lambda d: [EN, *SYN, "--count", "1", "-o", "ro"], needle="ro",
             ro="ro"))
    add(Case(f"{EN} preview -o onto a sample --overwrite",
             lambda d: [EN, "preview", "s", "-o", "s/0000_noisy.tif", "--overwrite"], needle="0000_noisy.tif",
             setup=_synth_samples))
    add(Case(f"{EN} synth full disk", lambda d: [EN, *SYN, "--count", "2", "-o", "o"], code=1,
             needle="0000_noisy.tif", fsize=4000))
    add(Case(f"{EN} synth Ctrl-C", lambda d: [EN, *SYN, "--count", "300", "-o", "o"], code=130,
             needle="interrupted", sig=signal.SIGINT, when=_temp_appears()))
    add(Case(f"{EN} synth SIGTERM", lambda d: [EN, *SYN, "--count", "300", "-o", "o"], code=143,
             needle="terminated", sig=signal.SIGTERM, when=_temp_appears()))
    add(Case(f"{EN} synth kill -9 mid-write, rerun", lambda d: [EN, *SYN, "--count", "12", "-o", "o"],
             code=-9, sig=signal.SIGKILL, when=_temp_appears(), rerun_outputs=tuple(
                 f"o/{i:04d}{s}" for i in range(12) for s in ("_noisy.tif", "_clean.tif", "_target.tif",
                                                              "_atoms.tif", ".json"))))
    add(Case(f"{EN} --version", lambda d: [EN, "--version"], code=0, stdout="em-noise "))
    # sfin-enhance
    add(Case(f"{SF} missing file", lambda d: [SF, "missing.tif", *SFM], needle="missing.tif",
             setup=_copy(("sfin_tiny.pt",))))
    for n in ("junk.tif", "trunc.mrc", "empty.mrc", "notes.txt", "nan.npy", "rgb.png", "4d.npy"):
        add(Case(f"{SF} {n}", lambda d, n=n: [SF, n, *SFM], needle=n, setup=_copy((n, "sfin_tiny.pt"))))
    add(Case(f"{SF} existing output without --overwrite", lambda d: [SF, "haadf.tif", *SFM], needle="--overwrite",
             setup=_and(_copy(("haadf.tif", "sfin_tiny.pt")), lambda d: (d / "haadf.enhanced.tif").write_text("old"))))
    add(Case(f"{SF} output onto its second input --overwrite",
             lambda d: [SF, "haadf.tif", "haadf.enhanced.tif", *SFM, "--overwrite"], needle="haadf.enhanced.tif",
             setup=_and(_copy(("haadf.tif", "sfin_tiny.pt")),
                        lambda d: (d / "haadf.enhanced.tif").write_bytes(FIX["haadf.tif"].read_bytes())),
             keeps=lambda b, a: all(a.get(k) == v for k, v in b.items())))  # the second input is processed
    add(Case(f"{SF} output a link to its input --overwrite", lambda d: [SF, "haadf.tif", *SFM, "--overwrite"],
             needle="haadf.enhanced.tif", setup=_and(_copy(("haadf.tif", "sfin_tiny.pt")),
                                                     lambda d: (d / "haadf.enhanced.tif").symlink_to("haadf.tif"))))
    add(Case(f"{SF} -o a read-only folder", lambda d: [SF, "haadf.tif", *SFM, "-o", "ro"], needle="ro",
             setup=_copy(("haadf.tif", "sfin_tiny.pt")), ro="ro"))
    add(Case(f"{SF} -o a file", lambda d: [SF, "haadf.tif", *SFM, "-o", "afile"], needle="afile",
             setup=_copy(("haadf.tif", "sfin_tiny.pt", "afile"))))
    add(Case(f"{SF} --model missing", lambda d: [SF, "haadf.tif", "--model", "nope.pt", "-q"], needle="nope.pt",
             setup=_copy(("haadf.tif",))))
    add(Case(f"{SF} --tile-size 8", lambda d: [SF, "haadf.tif", *SFM, "--tile-size", "8"], needle="tile-size",
             setup=_copy(("haadf.tif", "sfin_tiny.pt"))))
    add(Case(f"{SF} full disk", lambda d: [SF, "haadf.tif", *SFM], code=1, needle="haadf.enhanced.tif", fsize=4000,
             setup=_copy(("haadf.tif", "sfin_tiny.pt"))))
    add(Case(f"{SF} Ctrl-C 1.5 s after torch loads", lambda d: [SF, "long.tif", *SFM, "-o", "o"], code=130,
             needle="interrupted",
             sig=signal.SIGINT, when=_busy(1.5), setup=_copy(("long.tif", "sfin_tiny.pt"))))
    add(Case(f"{SF} SIGTERM 1.5 s after torch loads", lambda d: [SF, "long.tif", *SFM, "-o", "o"], code=143,
             needle="terminated",
             sig=signal.SIGTERM, when=_busy(1.5), setup=_copy(("long.tif", "sfin_tiny.pt"))))
    add(Case(f"{SF} kill -9 1.5 s after torch loads, rerun", lambda d: [SF, "long.tif", *SFM, "-o", "o"], code=-9,
             sig=signal.SIGKILL, when=_busy(1.5), setup=_copy(("long.tif", "sfin_tiny.pt")),
             rerun_outputs=("o/long.enhanced.tif",)))
    add(Case(f"{SF} 16-bit PNG -> float32 TIFF", lambda d: [SF, "p16.png", *SFM, "--units", "input"], code=0,
             setup=_copy(("p16.png", "sfin_tiny.pt")), tags=["float-output:p16.enhanced.tif"]))
    add(Case(f"{SF} --version", lambda d: [SF, "--version"], code=0, stdout="sfin-enhance "))
    # scgn-denoise
    add(Case(f"{SC} missing file", lambda d: [SC, "missing.tif", *SCM], needle="missing.tif",
             setup=_copy(("scgn_tiny.pt",))))
    for n in ("junk.tif", "nan.npy", "rgb.png"):
        add(Case(f"{SC} {n}", lambda d, n=n: [SC, n, *SCM], needle=n, setup=_copy((n, "scgn_tiny.pt"))))
    add(Case(f"{SC} read-only input folder", lambda d: [SC, "ro/hrtem.tif", *SCM, "--atoms"], needle="ro",
             setup=_and(_copy(("scgn_tiny.pt",)),
                        lambda d: (d / "ro/hrtem.tif").write_bytes(FIX["hrtem.tif"].read_bytes())), ro="ro"))
    add(Case(f"{SC} existing atoms CSV", lambda d: [SC, "hrtem.tif", *SCM, "--atoms", "--atoms-contrast", "dark"],
             needle="hrtem.atoms.csv", setup=_and(_copy(("hrtem.tif", "scgn_tiny.pt")),
                                                  lambda d: (d / "hrtem.atoms.csv").write_text("old\n"))))
    add(Case(f"{SC} full disk", lambda d: [SC, "hrtem.tif", *SCM], code=1, needle="hrtem.denoised.tif", fsize=4000,
             setup=_copy(("hrtem.tif", "scgn_tiny.pt"))))
    add(Case(f"{SC} Ctrl-C 1.5 s after torch loads", lambda d: [SC, "long.tif", *SCM, "-o", "o"], code=130,
             needle="interrupted",
             sig=signal.SIGINT, when=_busy(1.5), setup=_copy(("long.tif", "scgn_tiny.pt"))))
    add(Case(f"{SC} 16-bit PNG -> float32 TIFF", lambda d: [SC, "p16.png", *SCM], code=0,
             setup=_copy(("p16.png", "scgn_tiny.pt")), tags=["float-output:p16.denoised.tif"]))
    add(Case(f"{SC} --version", lambda d: [SC, "--version"], code=0, stdout="scgn-denoise "))
    # denza-recon
    tilts = ("tilts.mrc", "tilts.tlt")
    dset = tuple(f"tilts.fbp{s}" for s in (".mrc", ".reproj.mrc", ".preview.png", ".json"))
    add(Case(f"{DZ} missing file", lambda d: [DZ, "missing.mrc"], needle="missing.mrc"))
    for text, word in (("0\n10\n20\n", "3 tilt angles for 9 images"),
                       ("".join(f"{a}\n" for a in [0, 1, 2, 3, 3, 5, 6, 7, 8]), "duplicate")):
        add(Case(f"{DZ} bad angle file ({word})", lambda d: [DZ, "tilts.mrc", "--method", "fbp"], needle=word,
                 setup=_and(_copy(("tilts.mrc",)), lambda d, t=text: (d / "tilts.tlt").write_text(t))))
    add(Case(f"{DZ} -o onto its input --overwrite", lambda d: [DZ, "tilts.mrc", "-o", "tilts.mrc", "--overwrite"],
             needle="tilts.mrc", setup=_copy(tilts)))
    add(Case(f"{DZ} -o onto its angle file --overwrite",
             lambda d: [DZ, "tilts.mrc", "--angles", "a.mrc", "-o", "a.mrc", "--overwrite"], needle="a.mrc",
             setup=_and(_copy(tilts), lambda d: (d / "a.mrc").write_text(FIX["tilts.tlt"].read_text()))))
    add(Case(f"{DZ} -o a read-only folder", lambda d: [DZ, "tilts.mrc", "-o", "ro"], needle="ro",
             setup=_copy(tilts), ro="ro"))
    add(Case(f"{DZ} -o a file", lambda d: [DZ, "tilts.mrc", "-o", "afile"], needle="afile",
             setup=_copy((*tilts, "afile"))))
    add(Case(f"{DZ} --threads 0", lambda d: [DZ, "tilts.mrc", "--threads", "0"], needle="--threads",
             setup=_copy(tilts)))
    add(Case(f"{DZ} full disk", lambda d: [DZ, "tilts.mrc", "--method", "fbp"], code=1, needle="tilts.fbp",
             fsize=20_000, setup=_copy(tilts)))
    add(Case(f"{DZ} Ctrl-C during the fit", lambda d: [DZ, "tilts.mrc", "--iters", "100000", "--no-tune",
                                                       "--no-progress"],
             code=130, needle="interrupted", sig=signal.SIGINT, when=_busy(2.0), setup=_copy(tilts)))
    add(Case(f"{DZ} SIGTERM during the fit", lambda d: [DZ, "tilts.mrc", "--iters", "100000", "--no-tune",
                                                        "--no-progress"],
             code=143, needle="terminated", sig=signal.SIGTERM, when=_busy(2.0), setup=_copy(tilts)))
    add(Case(f"{DZ} kill -9 at the write, rerun", lambda d: [DZ, "tilts.mrc", "--method", "fbp"], code=-9,
             sig=signal.SIGKILL, when=_temp_appears(), setup=_copy(tilts), rerun_outputs=dset))
    add(Case(f"{DZ} --version", lambda d: [DZ, "--version"], code=0, stdout="denza-recon "))
    # training
    for prog, cfg in (("sfin-train", "tiny.yaml"), ("scgn-train", None)):
        conf = ["--config", cfg] if cfg else ["--config", "hrtem"]
        setup = _fit_config(3) if cfg else None
        add(Case(f"{prog} fit --ckpt_path missing.ckpt", lambda d, p=prog, c=conf: [p, "fit", *c, "--ckpt_path",
                                                                                    "missing.ckpt"],
                 needle="missing.ckpt", setup=setup))
        for n, word in (("missing.json", "no such file"), ("malformed.json", "JSON"), ("lam50.json", "pointwise.lam")):
            add(Case(f"{prog} fit --data.noise {n}", lambda d, p=prog, c=conf, n=n: [p, "fit", *c, "--data.noise", n],
                     needle=word, setup=_and(setup or (lambda d: None),
                                             _copy((n,)) if n != "missing.json" else (lambda d: None))))
        add(Case(f"{prog} --version", lambda d, p=prog: [p, "--version"], code=0, stdout=f"{prog} "))
    add(Case("sfin-train Ctrl-C during fit -> last.ckpt", lambda d: ["sfin-train", "fit", "--config", "tiny.yaml"],
             code=130, needle="interrupted", sig=signal.SIGINT, when=_busy(3.0, "config.yaml"),
             setup=_fit_config(100000), tags=["checkpoint:ckpt/last.ckpt"]))
    return c


# ----------------------------------------------------------------------------------------------- running


def _cmd(args: list) -> list[str]:
    return [script(str(args[0])), *map(str, args[1:])]


def run_case(case: Case, d: Path) -> tuple[bool, str, Result]:
    """Run one case in folder ``d``; (passed, why not, result)."""
    d.mkdir(parents=True)
    (d / "ro").mkdir() if case.ro else None
    if case.setup:
        case.setup(d)
    before = snapshot(d)
    args = _cmd(case.args(d))
    if case.ro:
        if not can_make_read_only():
            return False, "cannot make a folder read-only here", Result(None, "", "", 0.0)
        with read_only(d / case.ro):
            before = snapshot(d)
            res = run_cli(args, cwd=d)
            after = snapshot(d)
    elif case.sig is not None:
        res = interrupt(args, cwd=d, when=case.when(d), sig=case.sig, timeout=20)
        after = snapshot(d)
    else:
        res = run_cli(args, cwd=d, fsize=case.fsize)
        after = snapshot(d)
    problems = []
    if res.code != case.code:
        problems.append(f"exit {res.code}, expected {case.code}")
    if case.sig == signal.SIGKILL:
        rerun = run_cli(args, cwd=d)
        now = snapshot(d)
        if rerun.code != 0:
            problems.append(f"rerun exit {rerun.code}: {rerun.stderr.strip()[-200:]}")
        if temp_files(d):
            problems.append(f"temp files after the rerun: {temp_files(d)}")
        new = set(now) - set(before)
        if new != set(case.rerun_outputs):
            problems.append(f"rerun left {sorted(new)[:4]}..., expected {len(case.rerun_outputs)} outputs")
        return not problems, "; ".join(problems), res
    if case.code == 0:
        if case.stdout is not None and not (res.stdout.startswith(case.stdout) and len(res.stdout.splitlines()) == 1):
            problems.append(f"stdout {res.stdout!r}")
        for tag in case.tags:
            if tag.startswith("float-output:"):
                from em_noise.io import read_image

                out = d / tag.split(":", 1)[1]
                if not out.exists() or read_image(out).metadata["dtype"] != "float32":
                    problems.append(f"{out.name} missing or not float32")
    else:
        needle = case.needle(d) if callable(case.needle) else case.needle
        lines = res.lines
        if case.sig == signal.SIGINT and case.tags:  # training: Lightning prints its own lines before
            lines = lines[-1:]
            if "Traceback" in res.stderr:
                problems.append("traceback")
        elif not res.one_line(needle):
            problems.append(f"stderr {len(lines)} lines: {res.stderr.strip()[-300:]!r}")
        elif needle not in lines[-1]:
            problems.append(f"{needle!r} not in {lines[-1]!r}")
        if case.sig in (signal.SIGINT, signal.SIGTERM) and not case.tags and res.seconds >= 2.0:
            problems.append(f"stopped after {res.seconds:.2f} s")
        if case.keeps is not None:
            ok = case.keeps(before, after)
        else:
            ok = after == before
            for tag in case.tags:
                if tag.startswith("checkpoint:"):
                    ok = (d / tag.split(":", 1)[1]).exists() and all(after.get(k) == v for k, v in before.items())
        if not ok:
            problems.append(f"files changed: {sorted(set(after) ^ set(before)) or 'bytes'}")
        if temp_files(d):
            problems.append(f"temp files left: {temp_files(d)}")
    return not problems, "; ".join(problems), res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-k", default="", help="only cases whose name contains this")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "faults.md")
    args = ap.parse_args()
    t0 = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="faults-") as tmp:
        base = Path(tmp)
        FIX.update(_fixtures(base))
        rows = []
        todo = [c for c in cases() if args.k in c.name]
        for i, case in enumerate(todo):
            t = time.monotonic()
            ok, why, res = run_case(case, base / f"case{i:03d}")
            rows.append((case, ok, why, res, time.monotonic() - t))
            print(f"{'PASS' if ok else 'FAIL'} {case.name} ({time.monotonic() - t:.1f} s){'  ' + why if why else ''}",
                  flush=True)
    total = time.monotonic() - t0
    by_cli: dict[str, list[bool]] = {}
    for case, ok, *_ in rows:
        by_cli.setdefault(case.name.split()[0], []).append(ok)
    passes = sum(ok for _, ok, *_ in rows)
    lines = ["# Bad input and faults: every CLI", "",
             f"`{' '.join(['python', 'benchmarks/faults.py'] + (['-k', args.k] if args.k else []))}`: "
             f"{len(rows)} cases, **{passes} pass**, {total / 60:.1f} min on {platform.machine()} "
             f"({os.cpu_count()} CPUs, shared), Python {platform.python_version()}, "
             f"{'root (read-only folders: a read-only tmpfs)' if os.geteuid() == 0 else 'a normal user'}.", "",
             "A case passes when: the expected exit code (2 bad input / unusable output path, 1 resource, 130 Ctrl-C, "
             "143 SIGTERM); exactly one stderr line naming the file, no traceback; nothing left behind and every "
             "input byte unchanged; Ctrl-C / SIGTERM within 2 s; after `kill -9`, a rerun without `--overwrite` "
             "exits 0 with the whole set and no temp file. Full disk: `RLIMIT_FSIZE` (SIGXFSZ ignored).", "",
             "| CLI | cases | pass |", "|---|---:|---:|"]
    lines += [f"| {cli} | {len(v)} | {sum(v)} |" for cli, v in by_cli.items()]
    lines += ["", "exit: as `subprocess` reports it (-9: killed by SIGKILL); case s: the whole case (setup, run, "
              "rerun); "
              "stop s: from the signal to the exit.", "",
              "| case | exit | case s | stop s | result |", "|---|---:|---:|---:|---|"]
    for case, ok, why, res, secs in rows:
        result = "pass" if ok else "FAIL: " + why.replace("|", "/")
        stop = f"{res.seconds:.2f}" if case.sig is not None else ""
        lines.append(f"| {case.name} | {res.code} | {secs:.1f} | {stop} | {result} |")
    args.out.write_text("\n".join(lines) + "\n")
    print(f"{passes}/{len(rows)} pass; wrote {args.out}")


if __name__ == "__main__":
    main()
