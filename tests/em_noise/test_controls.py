import numpy as np
import pytest
from em_noise.controls import KINDS, lattice_free_frame
from em_noise.errors import EMInputError


@pytest.mark.parametrize("kind", KINDS)
def test_lattice_free_frames_are_deterministic_noisy_frames(kind):
    a = lattice_free_frame(kind, 500.0, [1, 2], size=64)
    assert a.shape == (64, 64) and a.dtype == np.float32 and np.isfinite(a).all()
    np.testing.assert_array_equal(a, lattice_free_frame(kind, 500.0, [1, 2], size=64))
    assert not np.array_equal(a, lattice_free_frame(kind, 500.0, [1, 3], size=64))


def test_fringes_hold_one_periodicity_and_vacuum_none():
    f = lattice_free_frame("fringes", 1e5, 0, size=128)
    v = lattice_free_frame("vacuum", 1e5, 0, size=128)
    pf = np.abs(np.fft.fft2(f - f.mean())) ** 2
    pv = np.abs(np.fft.fft2(v - v.mean())) ** 2
    assert pf.max() > 50 * pv.max()  # one strong reflection pair; vacuum has none
    k = np.hypot(*np.meshgrid(np.fft.fftfreq(128), np.fft.fftfreq(128)))
    assert 1 / k.ravel()[np.argmax(pf)] == pytest.approx(9.0, rel=0.1)  # the 9 px fringe period


def test_unknown_kind_is_refused():
    with pytest.raises(EMInputError, match="kind"):
        lattice_free_frame("crystal", 100.0, 0)
