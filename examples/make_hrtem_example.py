"""Write examples/hrtem_frame.tif: one noisy 512×512 HRTEM frame of nucleation (amorphous matrix + nuclei).

Synthesized with em_noise.synth (seed 20260324, dose 150 e/Å²), float32 TIFF with its pixel size (Å/px).
Run from the repository root:  uv run python examples/make_hrtem_example.py [--overwrite]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from em_noise.io import write_image
from em_noise.synth import SynthConfig, synthesize

SEED = 20260324
DOSE_E_PER_A2 = 150.0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-o", "--output", type=Path, default=Path(__file__).with_name("hrtem_frame.tif"))
    p.add_argument("--overwrite", action="store_true")
    args = p.parse_args()
    cfg = SynthConfig(mode="hrtem", size=512, structures={"nucleation": 1.0},
                      dose_e_per_A2=(DOSE_E_PER_A2, DOSE_E_PER_A2), nuclei=(2, 3))
    s = synthesize(cfg, SEED)
    out = write_image(args.output, s["noisy"], pixel_size_A=s["pixel_size_A"], overwrite=args.overwrite)
    print(f"wrote {out}: 512×512, {s['pixel_size_A']:.4f} Å/px, {s['meta']['n_columns']} columns "
          f"({s['meta']['n_crystalline']} crystalline)")


if __name__ == "__main__":
    main()
