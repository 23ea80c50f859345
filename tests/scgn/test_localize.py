"""Column detectors of scgn.localize on hand-made maps (no network)."""
import numpy as np
import pytest
from scgn.localize import AGREEMENT_MIN, detect_columns, map_agreement


def _spots(xy, shape=(64, 64), sigma=1.0):
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return sum(np.exp(-((xx - x) ** 2 + (yy - y) ** 2) / (2 * sigma**2)) for x, y in xy)


MAP_XY = [(12, 12), (12, 40), (40, 12), (40, 40)]
FRAME_XY = [(13, 13), (13, 41), (41, 13), (41, 41)]  # the frame's columns, 1 px off the map's (more precise)


def _found(pos):
    return sorted(map(tuple, np.round(pos).astype(int).tolist()))


def test_auto_takes_the_frame_peaks_of_the_contrast_the_map_shows():
    amap = _spots(MAP_XY)
    dark = 100.0 - 50.0 * _spots(FRAME_XY)
    assert map_agreement(amap, dark) < -AGREEMENT_MIN
    assert _found(detect_columns(amap, dark, "auto")) == sorted(FRAME_XY)
    assert _found(detect_columns(amap, 200.0 - dark, "auto")) == sorted(FRAME_XY)  # bright columns


def test_auto_falls_back_to_the_map_peaks_where_map_and_frame_disagree():
    amap = _spots(MAP_XY)
    frame = np.random.default_rng(0).normal(100.0, 5.0, amap.shape)
    assert abs(map_agreement(amap, frame)) < AGREEMENT_MIN
    assert _found(detect_columns(amap, frame, "auto", map_detection={"min_distance_px": 2, "threshold": 0.3})) == \
        sorted(MAP_XY)


def test_map_detectors_need_a_map():
    with pytest.raises(ValueError):
        detect_columns(None, np.zeros((8, 8)), "auto")
    with pytest.raises(ValueError):
        detect_columns(None, np.zeros((8, 8)), "sideways")
