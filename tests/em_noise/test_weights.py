"""em_noise.weights: the model card (and the first-format cards it converts), resolving, loading, saving; loading
and inference never import Lightning."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest
import torch
from em_noise.errors import EMInputError
from em_noise.weights import (
    CARD_FORMAT,
    Architecture,
    Budget,
    IOSpec,
    ModelCard,
    Output,
    bundled_names,
    count_parameters,
    io_for,
    load,
    read_card,
    resolve,
    save,
)

STEM = (["haadf", "bf"], ["bf"], [("enhanced", "target")], 256, (512, 128))
HRTEM = (["hrtem"], [], [("denoised", "input"), ("atom_map", "map")], 256, (512, 128))
ATOM_MAP = (["hrtem"], [], [("atom_map", "map")], 64, (64, 16))  # card converted from the first format


@pytest.mark.parametrize("package, name, cls, expected", [
    ("sfin", "haadf", "sfin.model.SFIN", STEM),
    ("sfin", "bf", "sfin.model.SFIN", STEM),
    ("scgn", "hrtem", "scgn.model.SCGN", HRTEM),
    ("scgn", "hrtem-atoms", "scgn.model.SCGN", ATOM_MAP),
])
def test_committed_cards_load_through_the_card_model(package, name, cls, expected):
    modes, invert, outputs, fov, tiling = expected
    net, card = load(name, package)
    raw = json.loads(resolve(name, package).with_suffix(".json").read_text())
    assert card.name == name and card.architecture.cls == cls
    assert (card.io.modes, card.io.invert) == (modes, invert)
    assert [(o.name, o.scale) for o in card.io.outputs] == outputs
    assert card.parameters == count_parameters(net) == raw["parameters"]
    assert card.training.run.steps > 0 and card.training.cumulative.steps >= card.training.run.steps
    assert card.training.cumulative.wall_time_s > 0 and card.field_of_view_px == fov
    assert (card.inference.tile_size, card.inference.overlap) == tiling  # what these weights were validated at
    assert card.validation.metrics and card.versions["torch"]
    assert not net.training


def test_a_continued_models_cumulative_budget_includes_its_parent():
    """The bundled hrtem continues earlier hrtem models (init_from; the first had 1000 steps): its card adds their
    budget to its own run; hrtem-atoms (its card converted from the first format) was fine-tuned from the first."""
    card, child = read_card(resolve("hrtem", "scgn")), read_card(resolve("hrtem-atoms", "scgn"))
    assert card.training.init_from == "hrtem" and card.training.config == "hrtem"
    assert card.training.cumulative.steps >= card.training.run.steps + 1000
    assert card.training.cumulative.wall_time_s > card.training.run.wall_time_s
    assert child.training.init_from == "hrtem"
    assert child.training.cumulative.steps == 1000 + child.training.run.steps
    assert child.training.cumulative.wall_time_s == pytest.approx(1895.5)
    assert child.detection["threshold"] > 0 and child.io.outputs[0].scale == "map"


def test_bundled_names_and_references(tmp_path):
    assert set(bundled_names("sfin")) >= {"haadf", "bf"} and "hrtem" in bundled_names("scgn")
    assert resolve("haadf", "sfin").name == "haadf.pt"
    with pytest.raises(EMInputError, match="bundled sfin models: bf, haadf"):
        resolve("nope", "sfin")
    with pytest.raises(EMInputError, match="no such weights"):
        resolve(tmp_path / "x.pt")


def _card(**kw) -> ModelCard:
    return ModelCard(name="conv", architecture=Architecture(cls="torch.nn.Conv2d", config={
        "in_channels": 1, "out_channels": 2, "kernel_size": 3, "padding": 1}), parameters=0,
        io=IOSpec(modes=["hrtem"], outputs=[Output(name="denoised", scale="input"),
                                            Output(name="atom_map", scale="map")]), **kw)


def test_save_then_load_round_trip(tmp_path):
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    pt, js = save(net, tmp_path / "m" / "conv.pt", _card(training={"cumulative": Budget(steps=7, wall_time_s=3.0)}))
    card = read_card(pt)
    assert json.loads(js.read_text())["format"] == CARD_FORMAT and card.parameters == count_parameters(net)
    assert card.output_index("atom_map") == 1 and card.output_index("nope") is None
    loaded, card2 = load(pt)
    torch.testing.assert_close(loaded.weight, net.weight)
    assert card2.training.cumulative.steps == 7


def test_bad_cards_and_mismatched_weights_are_input_errors(tmp_path):
    net = torch.nn.Conv2d(1, 2, 3, padding=1)
    pt, js = save(net, tmp_path / "conv.pt", _card())
    raw = json.loads(js.read_text())
    raw["architecture"]["config"]["out_channels"] = 3
    js.write_text(json.dumps(raw))
    with pytest.raises(EMInputError, match="do not match"):
        load(pt)
    js.write_text("{not json")
    with pytest.raises(EMInputError, match="unreadable model card"):
        load(pt)
    js.unlink()
    with pytest.raises(EMInputError, match="no model card"):
        load(pt)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(EMInputError, match="junk.pt"):
        load(tmp_path / "junk.pt")


def test_io_for_the_training_targets():
    stem = io_for("stem", "enhance")
    assert stem.modes == ["haadf", "bf"] and stem.invert == ["bf"] and stem.outputs[0].scale == "target"
    assert [o.name for o in io_for("hrtem", "denoise+localize").outputs] == ["denoised", "atom_map"]


def test_loading_and_inference_never_import_lightning(tmp_path):
    """The core, both CLIs' modules and both inference paths (bundled models, a Lightning checkpoint) run in a
    process where importing Lightning would be recorded in sys.modules."""
    import lightning as L
    from sfin.module import SFINModule

    module = SFINModule(width=8, blocks=1)
    trainer = L.Trainer(max_steps=0, logger=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.strategy.connect(module)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        import em_noise, em_noise.cli, em_noise.io, em_noise.restore, em_noise.weights, em_noise.modelcli
        import sfin, sfin.cli, scgn, scgn.cli
        frame = np.random.default_rng(0).normal(100, 10, (64, 64)).astype(np.float32)
        assert sfin.enhance(frame, "haadf").shape == frame.shape
        assert scgn.denoise(frame).shape == frame.shape
        net, card = em_noise.weights.load({str(ckpt)!r}, "sfin")
        assert card.architecture.cls == "sfin.model.SFIN" and card.architecture.config["width"] == 8
        bad = [m for m in sys.modules if m.split(".")[0] in ("lightning", "pytorch_lightning", "jsonargparse")]
        print("LEAK", bad) if bad else print("CLEAN")
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert res.stdout.strip().splitlines()[-1] == "CLEAN", res.stdout


@pytest.mark.parametrize("module, main, words", [
    ("sfin.cli", "enhance_main", ("--units", "paper", "examples:")),
    ("sfin.cli", "train_main", ("sfin-train fit --config stem", "export")),
    ("scgn.cli", "denoise_main", ("--atoms", "confidence", "examples:")),
    ("scgn.cli", "train_main", ("scgn-train fit --config hrtem", "export")),
])
def test_help_imports_neither_torch_nor_lightning(module, main, words):
    """--help of every method CLI stays light: the training stack and torch are imported only when used."""
    code = textwrap.dedent(f"""
        import sys
        from {module} import {main}
        try:
            {main}(["--help"])
        except SystemExit:
            pass
        print(sorted(m for m in ("torch", "lightning") if m in sys.modules))
    """)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stdout.strip().splitlines()[-1] == "[]", res.stdout + res.stderr
    assert all(w in res.stdout for w in words)
