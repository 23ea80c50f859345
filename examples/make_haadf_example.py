"""Make ``examples/haadf_frame.tif``: a noisy synthetic 512² HAADF STEM frame (uint16 counts) with its pixel size.

    uv run python examples/make_haadf_example.py          # rewrites examples/haadf_frame.tif
    uv run sfin-enhance examples/haadf_frame.tif          # -> examples/haadf_frame.enhanced.tif

The frame comes from em_noise.synth (a regular crystal lattice, the papers' HAADF noise model) with a seed the
sfin training and benchmark never use; intensities are scaled ×16 to uint16 detector-like counts.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from em_noise.io import write_image
from em_noise.synth import SynthConfig, synthesize

SEED = 424242
OUT = Path(__file__).resolve().parent / "haadf_frame.tif"


def main() -> None:
    cfg = SynthConfig(mode="haadf", size=512, structures={"regular": 1.0}, cell_px=(18.0, 24.0))
    sample = synthesize(cfg, seed=SEED)
    counts = np.clip(np.rint(sample["noisy"] * 16.0), 0, 65535).astype(np.uint16)
    write_image(OUT, counts, pixel_size_A=sample["pixel_size_A"], overwrite=True)
    print(f"{OUT}: {counts.shape[1]}x{counts.shape[0]} px, {sample['pixel_size_A']:.4f} Å/px, "
          f"{sample['meta']['structure']} structure, {sample['meta']['n_columns']} columns")


if __name__ == "__main__":
    main()
