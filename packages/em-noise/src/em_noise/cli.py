"""``em-noise``: synthesize paired EM training data, calibrate noise from a real image, preview samples."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from em_noise import __version__
from em_noise.cliutil import HelpFormatter, run
from em_noise.errors import EMInputError

MODES = ("haadf", "bf", "hrtem")

EPILOG = """examples:
  em-noise synth --mode haadf --count 4 --seed 1 -o /tmp/s
  em-noise calibrate /tmp/s/0000_noisy.tif --mode haadf
  em-noise calibrate frame.dm4 --mode haadf -o params.json
  em-noise synth --mode haadf --count 100 --noise params.json -o mydata
  em-noise synth --mode bf --recipe sfin-paper --count 8 -o paper_bf
  em-noise preview /tmp/s -o montage.png
"""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="em-noise", description=__doc__, epilog=EPILOG, formatter_class=HelpFormatter)
    p.add_argument("--version", action="version", version=f"em-noise {__version__}")
    sub = p.add_subparsers(dest="command", required=True, metavar="{synth,calibrate,preview}")

    s = sub.add_parser("synth", help="write noisy/clean/target/atom-map sample files", formatter_class=HelpFormatter,
                       epilog="example:\n  em-noise synth --mode haadf --count 4 --seed 1 -o /tmp/s\n"
                              "writes NNNN_noisy.tif, NNNN_clean.tif, NNNN_target.tif, NNNN_atoms.tif and NNNN.json "
                              "(true noise parameters and column positions in px)")
    s.add_argument("--mode", choices=MODES, required=True, help="imaging mode")
    s.add_argument("--count", type=int, default=4, help="number of samples")
    s.add_argument("--size", type=int, default=256, help="image edge in px")
    s.add_argument("--seed", type=int, default=0, help="random seed (same seed -> same files)")
    s.add_argument("--noise", type=Path, default=None, metavar="PARAMS.json",
                   help="calibrated noise parameters from 'em-noise calibrate' (default: the papers' distributions)")
    s.add_argument("--recipe", choices=("em-noise", "sfin-paper"), default="em-noise",
                   help="em-noise: this package's lattices, disorder and noise priors; sfin-paper: the SFIN authors' "
                        "published STEM generator (their 46 structures and priors)")
    s.add_argument("-o", "--output", type=Path, required=True, metavar="DIR",
                   help="output directory (created if missing)")
    s.add_argument("--overwrite", action="store_true", help="replace existing sample files")

    c = sub.add_parser("calibrate", help="estimate noise parameters from one real image", formatter_class=HelpFormatter,
                       epilog="examples:\n  em-noise calibrate frame.tif --mode haadf -o params.json\n"
                              "  em-noise calibrate movie.mrc --mode hrtem --frames 0:20 -o params.json")
    c.add_argument("image", type=Path, help="image file (.tif .mrc .png .npy .dm4 ...); a stack is calibrated frame "
                                            "by frame and the estimates combined")
    c.add_argument("--frames", default=None, metavar="START:STOP[:STEP]",
                   help="frames of a stack to use, Python slice syntax, 0-based (default: all); a negative START "
                        "needs the = form: --frames=-10:")
    c.add_argument("--mode", choices=MODES, required=True, help="imaging mode of the image")
    c.add_argument("-o", "--output", type=Path, default=None, metavar="PARAMS.json|DIR",
                   help="write the JSON to this file, or as <stem>.noise.json into this existing folder "
                        "(default: print)")
    c.add_argument("--overwrite", action="store_true", help="replace an existing output file")

    v = sub.add_parser("preview", help="PNG montage of noisy / clean / target samples", formatter_class=HelpFormatter,
                       epilog="examples:\n  em-noise preview /tmp/s -o montage.png\n"
                              "  em-noise preview --mode bf --count 3 --seed 2 -o bf.png")
    v.add_argument("folder", type=Path, nargs="?", default=None,
                   help="a folder written by 'em-noise synth' (else synthesize)")
    v.add_argument("--mode", choices=MODES, default="haadf", help="imaging mode when synthesizing")
    v.add_argument("--count", type=int, default=4, help="number of samples shown")
    v.add_argument("--size", type=int, default=256, help="image edge in px when synthesizing")
    v.add_argument("--seed", type=int, default=0, help="random seed when synthesizing")
    v.add_argument("-o", "--output", type=Path, required=True, metavar="PNG|DIR",
                   help="output PNG, or an existing folder to write preview.png into")
    v.add_argument("--overwrite", action="store_true", help="replace an existing output file")
    return p


def _positive(name: str, value: int, low: int = 1) -> None:
    if value < low:
        raise EMInputError(None, f"{name} must be >= {low}, got {value}")


def _synth(args: argparse.Namespace) -> int:
    from em_noise.outputs import OutputSet, check_outputs
    from em_noise.params import read_params
    from em_noise.synth import SynthConfig, sample_paths, write_samples

    _positive("--count", args.count)
    _positive("--size", args.size, 32)
    if args.recipe == "sfin-paper" and (args.mode == "hrtem" or args.noise is not None):
        raise EMInputError(args.noise, "--recipe sfin-paper is the published STEM distribution: haadf or bf, "
                                       "without --noise")
    if args.output.exists() and not args.output.is_dir():
        raise EMInputError(args.output, "output path exists and is not a directory")
    check_outputs(sample_paths(args.output, args.count), overwrite=args.overwrite, inputs=[args.noise])
    noise = read_params(args.noise, mode=args.mode).to_dict() if args.noise is not None else None
    cfg = SynthConfig(mode=args.mode, size=args.size, noise=noise, recipe=args.recipe)
    with OutputSet(inputs=[args.noise], overwrite=args.overwrite):  # every sample appears at the end, or none
        write_samples(args.output, cfg, args.count, args.seed, overwrite=args.overwrite, inputs=[args.noise])
    print(f"wrote {args.count} {args.mode} samples to {args.output}", file=sys.stderr)
    return 0


def _frame_slice(spec: str | None, path: Path) -> slice:
    """``START:STOP[:STEP]`` (Python slice syntax, 0-based) -> slice; None -> every frame."""
    if spec is None:
        return slice(None)
    parts = spec.split(":")
    try:
        if not 2 <= len(parts) <= 3:
            raise ValueError
        vals = [int(v) if v.strip() else None for v in parts]
    except ValueError:
        raise EMInputError(path, f"--frames {spec!r} is not START:STOP[:STEP] (e.g. 0:20 or ::2)") from None
    if len(vals) == 3 and vals[2] is not None and vals[2] <= 0:
        raise EMInputError(path, f"--frames {spec!r}: STEP must be positive")
    return slice(*vals)


def _calibrate(args: argparse.Namespace) -> int:
    from em_noise.calibrate import calibrate_frames, save_params
    from em_noise.io import read_image
    from em_noise.outputs import check_output

    if args.output is not None:
        if args.output.is_dir():
            args.output = args.output / f"{args.image.stem}.noise.json"
        check_output(args.output, overwrite=args.overwrite, inputs=[args.image])  # before the fit
    img = read_image(args.image)
    if img.data.ndim == 2 and args.frames is not None:
        raise EMInputError(args.image, "--frames given but the file holds a single 2-D image")
    stack = img.data if img.data.ndim == 3 else img.data[None]
    chosen = _frame_slice(args.frames, args.image)
    frames, numbers = stack[chosen], (range(len(stack))[chosen] if img.data.ndim == 3 else [None])
    if len(frames) == 0:
        raise EMInputError(args.image, f"--frames {args.frames} selects none of its {len(stack)} frames")
    from tqdm.auto import tqdm

    try:  # one frame: its own calibration (with a progress bar on a terminal); several: combined
        params = calibrate_frames(tqdm(frames, desc="calibrate", unit="frame", disable=None if len(frames) > 1
                                       else True), args.mode, pixel_size_A=img.pixel_size_A, numbers=numbers,
                                  progress=len(frames) == 1 and sys.stderr.isatty())
    except EMInputError as err:
        raise EMInputError(err.path or args.image, err.problem) from None
    if len(frames) > 1:
        print(f"{args.image}: calibrated {len(frames)} of {len(stack)} frames, estimates combined", file=sys.stderr)
    params = params.replace(source=str(args.image), pixel_size_A=img.pixel_size_A)
    if (params.intensity.scale, params.intensity.offset) != (1.0, 0.0):
        print(f"{args.image}: fitted on the noise models' 0–255 scale, image = {params.intensity.offset:.6g} + "
              f"{params.intensity.scale:.6g} × model ({params.calibration['intensity_rule']})", file=sys.stderr)
    if args.output is None:
        print(params.to_json(), end="")
    else:
        from em_noise.outputs import OutputSet

        with OutputSet(inputs=[args.image], overwrite=args.overwrite):
            save_params(args.output, params, overwrite=args.overwrite)
        print(f"wrote {args.output}", file=sys.stderr)
    unidentified = params.calibration.get("unidentified") or []
    if unidentified:
        what = f"these {params.calibration['frames']} frames do" if "frames" in params.calibration else \
            "this one image does"
        print(f"note: {args.image}: {what} not pin {', '.join(unidentified)}; the values given are best guesses "
              "(see calibration.standard_error)", file=sys.stderr)
    return 0


def _preview(args: argparse.Namespace) -> int:
    import numpy as np

    from em_noise.io import atomic_write, read_image
    from em_noise.outputs import OutputSet, check_output

    _positive("--count", args.count)
    if args.output.is_dir():
        args.output = args.output / "preview.png"
    sources: list[Path] = []
    if args.folder is not None and args.folder.is_dir():
        sources = [f for f in args.folder.iterdir() if f.is_file()]
    check_output(args.output, overwrite=args.overwrite, inputs=[args.folder, *sources])
    if args.output.suffix.lower() != ".png":
        raise EMInputError(args.output, "the preview is a PNG: give a .png file or a folder")
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []
    if args.folder is not None:
        if not args.folder.is_dir():
            raise EMInputError(args.folder, "not a folder written by 'em-noise synth'")
        noisy_files = sorted(args.folder.glob("*_noisy.tif"))[: args.count]
        if not noisy_files:
            raise EMInputError(args.folder, "holds no NNNN_noisy.tif files")
        for f in noisy_files:
            stem = f.name[: -len("_noisy.tif")]
            rows.append(tuple(read_image(args.folder / f"{stem}_{k}.tif").data for k in ("noisy", "clean", "target")))
    else:
        from em_noise.synth import SynthConfig, synthesize

        cfg = SynthConfig(mode=args.mode, size=args.size)
        for i in range(args.count):
            s = synthesize(cfg, args.seed * 100003 + i)
            rows.append((s["noisy"], s["clean"], s["target"]))

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def draw(tmp: Path) -> None:
        fig, axes = plt.subplots(len(rows), 3, figsize=(9, 3 * len(rows)), squeeze=False)
        for r, imgs in enumerate(rows):
            for c, (img, title) in enumerate(zip(imgs, ("noisy", "clean", "target"))):
                axes[r, c].imshow(img, cmap="gray")
                axes[r, c].set_axis_off()
                if r == 0:
                    axes[r, c].set_title(title)
        fig.tight_layout()
        fig.savefig(tmp, format="png", dpi=80)
        plt.close(fig)

    with OutputSet(inputs=[args.folder, *sources], overwrite=args.overwrite):
        atomic_write(args.output, draw, overwrite=args.overwrite)
    print(f"wrote {args.output}", file=sys.stderr)
    return 0


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    return {"synth": _synth, "calibrate": _calibrate, "preview": _preview}[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, argv, prog="em-noise")


if __name__ == "__main__":
    sys.exit(main())
