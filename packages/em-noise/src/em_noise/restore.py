"""Apply a restoration network to frames and files: scale, (tiled) prediction, map back, write, preview.

Intensity scaling (the same for every network of the toolkit): each frame is mapped affinely so that its 0.1 and
99.9 intensity percentiles become 0 and 1 (the range the networks were trained on, see :mod:`em_noise.scaling`);
frames of a mode the card lists under ``io.invert`` are inverted (v -> 1 - v) before the network and its image
outputs after it. Each output then goes to its own units (``card.io.outputs[i].scale``): ``input`` outputs are
mapped back with the inverse of the input's map (counts stay counts); ``target`` outputs (the enhancement target,
absolute) are written on the 0–255 paper scale, or with ``units='input'`` mapped back like an ``input`` output;
``map`` outputs stay in [0, 1]. Outputs are float32.
"""
from __future__ import annotations

import copy
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from em_noise.cliutil import reraise_interrupt
from em_noise.errors import EMInputError
from em_noise.io import EMImage, atomic_write, output_path, read_image, write_image
from em_noise.outputs import OutputSet, as_output_error, check_outputs
from em_noise.scaling import denormalize, normalize, robust_range
from em_noise.tiling import predict_tiled
from em_noise.weights import ModelCard

Predictor = Callable[[torch.Tensor], torch.Tensor]
PAPER_SCALE = 255.0  # 'target' outputs: background 0, brightest column 255 (the SFIN paper's convention)
UNITS = ("paper", "input")
FLOAT_CONTAINERS = (".tif", ".tiff", ".mrc", ".mrcs", ".st", ".ali", ".rec", ".map", ".npy")

# Small tiles are sent to the network in batches of about one 512² tile's worth of pixels (fewer, larger calls).
BATCH_PIXELS = 512 * 512
MAX_TILE_BATCH = 64


def tile_batch_size(tile_size: int) -> int:
    """Tiles per network call for ``tile_size`` px tiles: as many as fit in ``BATCH_PIXELS`` (1..64)."""
    return int(max(1, min(MAX_TILE_BATCH, BATCH_PIXELS // max(1, tile_size * tile_size))))


def make_predictor(net: torch.nn.Module, device: str | torch.device = "cpu") -> Predictor:
    """Wrap a net (put in eval mode on ``device``) as a no-grad function of (B, 1, h, w) float32 CPU tensors.

    A net with a ``fold_batchnorm_`` method runs as a copy with its BatchNorms folded into the convolutions (same
    outputs to float rounding, faster); the net passed in is left as it is.
    """
    if callable(getattr(net, "fold_batchnorm_", None)):
        net = copy.deepcopy(net).fold_batchnorm_()
    net = net.to(device).eval()

    @torch.no_grad()
    def predict(x: torch.Tensor) -> torch.Tensor:
        return net(x.to(device, torch.float32)).float().cpu()

    return predict


def restore_array(predict: Predictor, data: np.ndarray, *, tile_size: int = 1024, overlap: int = 128,
                  scales: Sequence[str] = ("input",), invert: bool = False, units: str = "input",
                  progress: bool = False, desc: str = "frames", pad: int = 0) -> np.ndarray:
    """Restore an image (Y, X) or stack (N, Y, X) frame by frame, float32.

    ``scales``: the scale of each output channel (see the module docstring); ``invert``: invert the frames before
    the network and the image outputs after it; ``units``: 'input' or 'paper' for ``target`` outputs.
    Returns the data's shape for one output channel, else ``(C, *data.shape)``.
    """
    if units not in UNITS:
        raise EMInputError(None, f"units must be one of {', '.join(UNITS)}, got {units!r}")
    frames = np.asarray(data, dtype=np.float32)
    frames = frames[None] if frames.ndim == 2 else frames
    out = np.empty((len(scales), *frames.shape), dtype=np.float32)
    it: Iterable[int] = range(frames.shape[0])
    many = frames.shape[0] > 1
    if progress and many:
        from tqdm.auto import tqdm

        it = tqdm(it, desc=desc, unit="frame")
    for i in it:
        lo, hi = robust_range(frames[i])
        x = normalize(frames[i], lo, hi)
        y = predict_tiled(predict, 1.0 - x if invert else x, tile_size=tile_size, overlap=overlap,
                          batch_size=tile_batch_size(tile_size), progress=progress and not many, pad=pad)
        y = y.reshape(-1, *x.shape)
        if y.shape[0] != len(scales):
            raise ValueError(f"network returned {y.shape[0]} channels, its card lists {len(scales)} outputs")
        for c, scale in enumerate(scales):
            v = 1.0 - y[c] if invert and scale != "map" else y[c]
            if scale == "input" or (scale == "target" and units == "input"):
                v = denormalize(v, lo, hi)
            elif scale == "target":
                v = v * np.float32(PAPER_SCALE)
            out[c, i] = v
    out = out[:, 0] if np.ndim(data) == 2 else out
    return out[0] if len(scales) == 1 else out


@dataclass
class Runner:
    """A loaded network with its card, run on frames as the command-line tools and the Python APIs do.

    ``tile_size`` / ``overlap`` default to the card's ``inference`` section; tiles smaller than the field of view the
    network was trained on are refused.
    """

    net: torch.nn.Module
    card: ModelCard
    device: str | torch.device = "cpu"
    tile_size: int | None = None
    overlap: int | None = None
    predict: Predictor = field(init=False, repr=False)

    def __post_init__(self) -> None:
        inf = self.card.inference
        tile = inf.tile_size if self.tile_size is None else int(self.tile_size)
        if self.overlap is not None:
            overlap = int(self.overlap)
        else:
            overlap = inf.overlap if self.tile_size is None else tile // 8
        least = max(16, min(self.card.field_of_view_px or 16, 256))
        if tile < least:
            raise EMInputError(None, f"--tile-size must be at least {least} px for model {self.card.name!r} (its "
                                     f"training field of view), got {tile}")
        if overlap < 0 or 2 * overlap >= tile:
            raise EMInputError(None, f"--tile-overlap must be >= 0 and < tile-size/2, got {overlap}")
        self.tile_size, self.overlap = tile, overlap
        self.predict = make_predictor(self.net, self.device)

    def check_mode(self, mode: str | None) -> None:
        modes = self.card.io.modes
        if mode is not None and modes and mode not in modes:
            raise EMInputError(None, f"model {self.card.name!r} is for {'/'.join(modes)} frames, not {mode}")

    def run(self, data: np.ndarray, *, mode: str | None = None, units: str = "paper", progress: bool = False,
            desc: str = "frames") -> dict[str, np.ndarray]:
        """Output name -> array of the data's shape (image (Y, X) or stack (N, Y, X)), each in its own units."""
        self.check_mode(mode)
        outputs = self.card.io.outputs
        y = restore_array(self.predict, data, tile_size=self.tile_size, overlap=self.overlap,
                          scales=[o.scale for o in outputs], invert=mode in self.card.io.invert, units=units,
                          progress=progress, desc=desc, pad=self.card.inference.pad_px)
        y = y[None] if len(outputs) == 1 else y
        return {o.name: y[c] for c, o in enumerate(outputs)}

    def provenance(self, **extra: Any) -> dict[str, Any]:
        """What produced an output, flat and short (TIFF description, MRC labels): model name, class, export time,
        cumulative training steps, tiling, plus ``extra`` (program, version, units, ...)."""
        return {"model": self.card.name, "architecture": self.card.architecture.cls,
                "model_created": self.card.created_utc, "model_steps": self.card.training.cumulative.steps,
                "tile_size": self.tile_size, "overlap": self.overlap, **extra}


# ----------------------------------------------------------------------------------------------- arrays and files


def unwrap(image: Any, pixel_size_A: float | None = None) -> tuple[np.ndarray, float | None, Callable]:
    """``(data, pixel size in Å, rewrap)`` of a numpy image / stack or a hyperspy ``Signal2D`` (duck-typed, hyperspy
    is not needed): a signal's pixel size comes from its last signal axis unless ``pixel_size_A`` is given, and
    ``rewrap(result)`` returns a copy of the signal holding the result (an array stays an array)."""
    from em_noise.formats.units import length_to_A

    if hasattr(image, "axes_manager") and hasattr(image, "data"):
        axes = list(getattr(image.axes_manager, "signal_axes", ()))
        if pixel_size_A is None and axes:
            scale = length_to_A(getattr(axes[-1], "units", None))
            pixel_size_A = float(axes[-1].scale) * scale if scale is not None else None

        def rewrap(result: np.ndarray) -> Any:
            out = image.deepcopy()
            out.data = result
            return out

        data = np.asarray(image.data)
    else:
        data, rewrap = np.asarray(image), (lambda result: result)
    if data.ndim not in (2, 3) or min(data.shape) < 1:
        raise EMInputError(None, f"expected an image (Y, X) or a stack (N, Y, X), got shape {data.shape}")
    if pixel_size_A is not None and not (np.isfinite(pixel_size_A) and pixel_size_A > 0):
        raise EMInputError(None, f"pixel_size_A must be a positive number of Å, got {pixel_size_A!r}")
    return data.astype(np.float32, copy=False), pixel_size_A, rewrap


def output_ext(path: str | Path, uint8: bool = False) -> str:
    """Output container for an input: its own when it holds float32 (TIFF, MRC, NPY), else TIFF; ``uint8``: an
    8-bit PNG for a PNG input, else an 8-bit TIFF."""
    ext = Path(path).suffix.lower()
    if uint8:
        return ".png" if ext == ".png" else ".tif"
    return ext if ext in FLOAT_CONTAINERS else ".tif"


def to_uint8(data: np.ndarray) -> np.ndarray:
    """Round and clip to 0–255 (8-bit output on request)."""
    return np.clip(np.rint(data), 0, 255).astype(np.uint8)


def write_output(path: Path, data: np.ndarray, img: EMImage, *, uint8: bool, overwrite: bool,
                 provenance: dict[str, Any] | None = None) -> Path:
    """Write a restored frame or stack like ``img`` (pixel size, MRC header), float32 or, with ``uint8``, 8-bit."""
    return write_image(path, to_uint8(data) if uint8 else data, like=img, overwrite=overwrite, provenance=provenance)


def run_inputs(inputs: Sequence[str | Path], plan: Callable[[Path], list[Path]], load: Callable[[], Any],
               process: Callable[[Any, Path, list[Path]], str | None], *, prog: str, overwrite: bool,
               quiet: bool = False, other_inputs: Sequence[str | Path | None] = ()) -> int:
    """The toolkit's many-inputs convention: every bad input is reported (one line) and skipped, the others are
    processed, and the exit code is 2 at the end when any failed (1 when a resource ran out, e.g. a full disk:
    then the remaining inputs are not tried).

    ``plan(path)`` lists an input's outputs; they are checked (never an input of the command: any of ``inputs``
    or ``other_inputs`` such as a model file; an existing one only with ``overwrite``) before ``load()`` (the
    model) is called, and ``load`` is not called when no input is left. ``process(loaded, path, outputs)`` writes
    them (as one :class:`~em_noise.outputs.OutputSet`: all or none) and returns a line to report.
    """
    paths = [Path(p) for p in inputs]
    every_input = [*paths, *other_inputs]
    codes: list[int] = []

    def fail(exc: EMInputError | OSError, path: Path) -> int:
        err = exc if isinstance(exc, EMInputError) else as_output_error(exc, path, verb="")
        print(f"{prog}: error: {err}", file=sys.stderr)
        codes.append(int(getattr(err, "exit_code", 2)))
        return codes[-1]

    todo, planned = [], set()
    for path in paths:
        try:
            outs = check_outputs(plan(path), overwrite=overwrite, inputs=every_input)
            for out in outs:
                if out.resolve() in planned:
                    raise EMInputError(out, "is also the output of another input; write them to different -o "
                                            "folders")
            planned.update(out.resolve() for out in outs)
            todo.append((path, outs))
        except (EMInputError, OSError) as exc:
            fail(exc, path)
    loaded = load() if todo else None
    for path, outs in todo:
        try:
            with OutputSet(inputs=every_input, overwrite=overwrite):
                line = process(loaded, path, outs)
        except (EMInputError, OSError) as exc:
            reraise_interrupt()
            if fail(exc, path) == 1:
                break
            continue
        if line and not quiet:
            print(line, file=sys.stderr)
    return 2 if 2 in codes else (1 if codes else 0)


def read_frames(path: Path) -> EMImage:
    """Read an input for restoration: 2-D images or stacks of them."""
    img = read_image(path)
    if img.data.ndim not in (2, 3):
        raise EMInputError(path, f"expected an image or a stack of images, got shape {img.data.shape}")
    return img


def planned_output(path: Path, suffix: str, out_dir: str | Path | None, uint8: bool = False) -> Path:
    """``<stem>.<suffix>.<ext>`` next to the input or in ``out_dir`` (see :func:`output_ext`)."""
    return output_path(path, suffix, out_dir, ext=output_ext(path, uint8))


def restore_file(runner: Runner, path: Path, out: Path, *, output: str, mode: str | None = None,
                 units: str = "paper", uint8: bool = False, preview: Path | None = None, overwrite: bool = False,
                 progress: bool = True,
                 provenance: dict[str, Any] | None = None) -> tuple[EMImage, dict[str, np.ndarray]]:
    """Restore one file: write its ``output`` channel to ``out`` (pixel size and MRC header kept, ``provenance``
    added to the runner's) and, if asked, a preview; returns the source image and every output channel."""
    img = read_frames(path)
    outs = runner.run(img.data, mode=mode, units=units, progress=progress, desc=path.name)
    scale = next(o.scale for o in runner.card.io.outputs if o.name == output)
    prov = runner.provenance(mode=mode, units=units if scale == "target" else "input", **(provenance or {}))
    write_output(out, outs[output], img, uint8=uint8, overwrite=overwrite, provenance=prov)
    if preview is not None:
        write_preview(preview, img.data, outs[output], name=path.name, titles=("input", output),
                      pixel_size_A=img.pixel_size_A, overwrite=overwrite)
    return img, outs


# ----------------------------------------------------------------------------------------------- preview


def _scale_bar_nm(width_px: int, pixel_size_A: float) -> tuple[float, float]:
    """(length in nm, length in px) of a round scale bar about a fifth of the frame wide."""
    target_nm = width_px * pixel_size_A / 10.0 / 5.0
    k = 10.0 ** np.floor(np.log10(target_nm))
    nm = max(m * k for m in (1.0, 2.0, 5.0) if m * k <= target_nm) if target_nm >= k else k
    return float(nm), float(nm * 10.0 / pixel_size_A)


def residual(before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """``before`` minus the least-squares affine fit of ``after`` to it (compares outputs on another scale)."""
    a, b = np.asarray(after, np.float64).ravel(), np.asarray(before, np.float64).ravel()
    var = a.var()
    gain = float(((a - a.mean()) * (b - b.mean())).mean() / var) if var > 0 else 0.0
    return (before - (gain * after + (b.mean() - gain * a.mean()))).astype(np.float32)


def write_preview(path: str | Path, before: np.ndarray, after: np.ndarray, *, name: str,
                  titles: tuple[str, str] = ("input", "output"), pixel_size_A: float | None = None,
                  overwrite: bool = False) -> Path:
    """PNG of the first frame: input | output | residual (input − affine-fitted output), each panel titled and shown
    between its 0.1 / 99.9 percentiles, a scale bar in nm when the pixel size is known, the file name on top."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    a = before[0] if before.ndim == 3 else before
    b = after[0] if after.ndim == 3 else after
    panels = ((a, titles[0]), (b, titles[1]), (residual(a, b), f"residual: {titles[0]} − fitted {titles[1]}"))
    h, w = a.shape

    def _draw(tmp: Path) -> None:
        fig, axes = plt.subplots(1, 3, figsize=(15, 5.6), dpi=100)
        for ax, (img, title) in zip(axes, panels):
            lo, hi = robust_range(img)
            ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
            ax.set_title(title, fontsize=11)
            ax.axis("off")
            if pixel_size_A:
                nm, px = _scale_bar_nm(w, pixel_size_A)
                x0, y0 = 0.05 * w, 0.93 * h
                ax.add_patch(Rectangle((x0, y0), px, max(2.0, 0.012 * h), facecolor="white", edgecolor="black"))
                ax.text(x0 + px / 2, y0 - 0.015 * h, f"{nm:g} nm", color="white", ha="center", va="bottom",
                        fontsize=10, fontweight="bold", bbox={"facecolor": "black", "alpha": 0.5, "pad": 1.5})
        sampling = f"{pixel_size_A:.4g} Å/px" if pixel_size_A else "pixel size unknown"
        fig.suptitle(f"{name}  ({w}×{h} px, {sampling})", fontsize=12)
        fig.tight_layout()
        fig.savefig(tmp, format="png")
        plt.close(fig)

    return atomic_write(path, _draw, overwrite=overwrite)
