"""File formats behind :mod:`em_noise.io`: MRC (and extended headers), TIFF, vendor multi-signal files, units."""
