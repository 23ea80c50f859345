"""scgn-denoise / scgn-train command lines (tiny random model; bundled-model quality is in test_bundled.py)."""
import csv

import numpy as np
import pytest
import torch
from em_noise.io import read_image, write_image
from scgn.cli import denoise_main, train_main


def test_denoise_single_frame_keeps_pixel_size(hrtem_tif, tiny_weights, tmp_path):
    path, s = hrtem_tif

    rc = denoise_main([str(path), "--model", str(tiny_weights), "--device", "cpu"])

    assert rc == 0
    out = read_image(tmp_path / "frame.denoised.tif")
    assert out.data.shape == (64, 64)
    assert out.pixel_size_A == pytest.approx(s["pixel_size_A"], rel=1e-5)
    assert np.isfinite(out.data).all()
    assert out.provenance["program"] == "scgn-denoise" and out.provenance["model"] == "tiny"


def test_two_output_model_gives_frame_and_atoms_in_one_pass(hrtem_stack_tif, tiny_two, tmp_path):
    out_dir = tmp_path / "out"

    rc = denoise_main([str(hrtem_stack_tif), "--model", str(tiny_two), "--atoms", "--atoms-model",
                       str(tmp_path / "absent.pt"), "-o", str(out_dir), "-q"])  # its own map: no atoms model

    assert rc == 0
    assert read_image(out_dir / "movie.denoised.tif").data.shape == (3, 48, 48)
    with open(out_dir / "movie.atoms.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        rows = list(reader)
    assert reader.fieldnames == ["frame", "x_px", "y_px", "x_A", "y_A", "intensity", "confidence"]
    assert {int(r["frame"]) for r in rows} <= {0, 1, 2}


def test_one_output_model_takes_the_atom_map_from_the_atoms_model(hrtem_tif, tiny_weights, tiny_two, tmp_path,
                                                                  capsys):
    path, _ = hrtem_tif
    assert denoise_main([str(path), "--model", str(tiny_weights), "--atoms", "--atoms-model",
                         str(tmp_path / "absent.pt"), "-q"]) == 2
    assert "absent.pt" in capsys.readouterr().err
    assert denoise_main([str(path), "--model", str(tiny_weights), "--atoms", "--atoms-model", str(tiny_weights),
                         "-q"]) == 2  # a model without an atom-map output
    assert "no atom-map output" in capsys.readouterr().err
    assert denoise_main([str(path), "--model", str(tiny_weights), "--atoms", "--atoms-model", str(tiny_two),
                         "-q"]) == 0


def test_python_defaults_equal_the_cli(hrtem_tif, tiny_weights, tmp_path):
    import scgn

    path, s = hrtem_tif
    assert denoise_main([str(path), "--model", str(tiny_weights), "-q"]) == 0
    np.testing.assert_allclose(read_image(tmp_path / "frame.denoised.tif").data,
                               scgn.denoise(s["noisy"], model=str(tiny_weights)), rtol=1e-5, atol=1e-3)
    table = scgn.locate_atoms(s["noisy"], model=str(tiny_weights), contrast="bright", pixel_size_A=0.5)
    assert set(table.columns()) == {"frame", "x_px", "y_px", "x_A", "y_A", "intensity", "confidence"}
    np.testing.assert_allclose(table["x_A"], table["x_px"] * 0.5)


def test_existing_output_needs_overwrite(hrtem_tif, tiny_weights, tmp_path, capsys):
    path, _ = hrtem_tif
    args = [str(path), "--model", str(tiny_weights)]
    assert denoise_main(args) == 0
    capsys.readouterr()

    rc = denoise_main(args)

    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "exists" in err
    assert denoise_main(args + ["--overwrite"]) == 0


@pytest.mark.parametrize("content, problem", [(None, "no such file"), (b"not an image at all", "")])
def test_bad_input_is_one_line_exit_2(tmp_path, tiny_weights, capsys, content, problem):
    path = tmp_path / "bad.tif"
    if content is not None:
        path.write_bytes(content)

    rc = denoise_main([str(path), "--model", str(tiny_weights)])

    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and "bad.tif" in err and problem in err
    assert "Traceback" not in err


def test_bad_input_does_not_stop_the_good_ones(hrtem_tif, tiny_weights, tmp_path, capsys):
    path, _ = hrtem_tif

    rc = denoise_main([str(tmp_path / "missing.tif"), str(path), "--model", str(tiny_weights), "-q"])

    assert rc == 2 and (tmp_path / "frame.denoised.tif").exists()
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "missing.tif" in err[0]


def test_bad_model_is_one_line_exit_2(hrtem_tif, tmp_path, capsys):
    path, _ = hrtem_tif
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"garbage")

    assert denoise_main([str(path), "--model", "no-such-model"]) == 2
    assert denoise_main([str(path), "--model", str(junk)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and all(line.startswith("scgn-denoise: error:") for line in err)


@pytest.mark.skipif(torch.cuda.is_available(), reason="machine has CUDA")
def test_cuda_without_gpu_is_exit_2(hrtem_tif, tiny_weights, capsys):
    path, _ = hrtem_tif
    assert denoise_main([str(path), "--model", str(tiny_weights), "--device", "cuda"]) == 2
    assert "cuda" in capsys.readouterr().err.lower()


def test_png_and_npy_inputs(tmp_path, tiny_weights):
    img = (np.random.default_rng(0).random((40, 36)) * 255).astype(np.float32)
    npy = write_image(tmp_path / "a.npy", img)

    assert denoise_main([str(npy), "--model", str(tiny_weights)]) == 0
    assert read_image(tmp_path / "a.denoised.npy").data.shape == (40, 36)


def test_usage_errors_exit_2():
    with pytest.raises(SystemExit) as exc:
        denoise_main(["--device", "tpu", "x.tif"])
    assert exc.value.code == 2


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit):
        denoise_main(["--help"])
    assert train_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "scgn-denoise examples/hrtem_frame.tif" in out and "--atoms" in out and "confidence" in out
    assert "scgn-train fit --config hrtem" in out and "hrtem, hrtem-atoms" in out


def test_export_rejects_non_checkpoint(tmp_path, capsys):
    bad = tmp_path / "x.ckpt"
    bad.write_bytes(b"nope")
    assert train_main(["export", str(bad), "--name", "x", "-o", str(tmp_path)]) == 2
    assert "x.ckpt" in capsys.readouterr().err


def test_atoms_by_contrast_needs_no_atoms_model(hrtem_stack_tif, tiny_weights, tmp_path):
    rc = denoise_main([str(hrtem_stack_tif), "--model", str(tiny_weights), "--atoms", "--atoms-contrast", "bright",
                       "--atoms-model", str(tmp_path / "absent.pt"), "-o", str(tmp_path / "o"), "--preview"])

    assert rc == 0 and (tmp_path / "o" / "movie.atoms.csv").is_file()
    assert (tmp_path / "o" / "movie.denoised.preview.png").is_file()


def test_existing_atoms_csv_needs_overwrite(hrtem_tif, tiny_weights, tmp_path, capsys):
    path, _ = hrtem_tif
    (tmp_path / "frame.atoms.csv").write_text("old\n")

    rc = denoise_main([str(path), "--model", str(tiny_weights), "--atoms", "--atoms-contrast", "dark"])

    assert rc == 2 and "frame.atoms.csv" in capsys.readouterr().err
    assert (tmp_path / "frame.atoms.csv").read_text() == "old\n"
    assert not (tmp_path / "frame.denoised.tif").exists()  # refused before any model was loaded


# --------------------------------------------------------------------------- outputs and faults


def _one_line(capsys, *needles):
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in err[0] and all(n in err[0] for n in needles), err
    return err[0]


@pytest.mark.skipif(not __import__("em_noise.testing").testing.can_make_read_only(), reason="cannot make read-only")
def test_a_read_only_input_folder_is_one_line_exit_2(hrtem_tif, tiny_weights, tmp_path, capsys):
    from em_noise.testing import read_only, snapshot

    path, _ = hrtem_tif
    folder = tmp_path / "data"
    folder.mkdir()
    path.rename(folder / path.name)
    with read_only(folder):  # outputs default to beside the input
        before = snapshot(tmp_path)
        assert denoise_main([str(folder / path.name), "--model", str(tiny_weights), "--atoms", "-q"]) == 2
        _one_line(capsys, str(folder))
        assert snapshot(tmp_path) == before


def test_outputs_onto_inputs_are_refused_even_with_overwrite(hrtem_tif, tiny_weights, tmp_path, capsys):
    from em_noise.testing import snapshot

    path, _ = hrtem_tif
    second = tmp_path / "frame.atoms.csv"
    second.write_text("frame,x_px\n")  # an odd input, but an input: never an output
    before = snapshot(tmp_path)
    rc = denoise_main([str(path), str(second), "--model", str(tiny_weights), "--atoms", "--atoms-contrast", "dark",
                       "--overwrite", "-q"])
    assert rc == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert any("frame.atoms.csv" in e and "input" in e for e in err) and all("Traceback" not in e for e in err)
    assert snapshot(tmp_path)["frame.atoms.csv"] == before["frame.atoms.csv"]
    assert snapshot(tmp_path)["frame.tif"] == before["frame.tif"]


def test_16_bit_png_gives_a_float_output(tmp_path, tiny_weights):
    from PIL import Image

    counts = np.random.default_rng(0).integers(1000, 60000, (40, 36)).astype(np.uint16)
    Image.fromarray(counts).save(tmp_path / "c.png")
    assert denoise_main([str(tmp_path / "c.png"), "--model", str(tiny_weights), "-q"]) == 0
    out = read_image(tmp_path / "c.denoised.tif")
    assert out.metadata["dtype"] == "float32" and out.data.max() > 255 and not (tmp_path / "c.denoised.png").exists()


def test_version(capsys):
    import scgn

    with pytest.raises(SystemExit) as e:
        denoise_main(["--version"])
    assert capsys.readouterr().out.strip() == f"scgn-denoise {scgn.__version__}" and e.value.code == 0
    assert train_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"scgn-train {scgn.__version__}"


def test_full_disk_is_one_line_exit_1(hrtem_tif, tiny_weights, tmp_path):
    from em_noise.testing import run_cli, script, snapshot

    path, _ = hrtem_tif
    before = snapshot(tmp_path)
    res = run_cli([script("scgn-denoise"), str(path), "--model", str(tiny_weights), "-q", "--device", "cpu"],
                  fsize=4_000)
    assert res.code == 1 and res.one_line("frame.denoised.tif"), res.stderr
    assert snapshot(tmp_path) == before
