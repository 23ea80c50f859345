"""scgn-train: packaged configs by name, a tiny two-output fit and its export (seconds, not a real training)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from em_noise.weights import read_card
from scgn.api import load_model
from scgn.cli import train_main


def _tiny_config(tmp: Path, max_steps: int = 2) -> Path:
    import yaml

    checkpoint = {"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                  "init_args": {"dirpath": str(tmp / "ckpt"), "save_last": True, "save_top_k": 0}}
    cfg = {"seed_everything": 0,
           "trainer": {"accelerator": "cpu", "devices": 1, "max_steps": max_steps, "max_epochs": -1,
                       "limit_val_batches": 0, "logger": False, "enable_progress_bar": False,
                       "enable_model_summary": False, "default_root_dir": str(tmp), "callbacks": [checkpoint]},
           "model": {"width": 8, "n_blocks": 1, "out_channels": 2, "loss": "l1+mse"},
           "data": {"target": "denoise+localize", "size": 48, "patch": None, "epoch_length": 4, "batch_size": 2,
                    "val_length": 2, "val_size": 48}}
    path = tmp / "tiny.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_packaged_config_by_name(capsys):
    with pytest.raises(SystemExit) as exc:
        train_main(["fit", "--config", "hrtem", "--print_config"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "out_channels: 2" in out and "denoise+localize" in out


def test_two_output_fit_and_export(tmp_path):
    cfg = _tiny_config(tmp_path)
    assert train_main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert train_main(["export", str(ckpt), "--name", "two", "-o", str(tmp_path), "--config", str(cfg),
                       "--device", "cpu", "--tile-size", "512", "--pad", "16"]) == 0
    card = read_card(tmp_path / "two.pt")
    assert card.inference.pad_px == 16
    assert [o.name for o in card.io.outputs] == ["denoised", "atom_map"] and card.io.modes == ["hrtem"]
    assert set(card.validation.metrics) == {"denoised", "atom_map"} and card.validation.input_psnr_db is not None
    assert card.detection["chosen_on"] == "validation set" and "threshold" in card.detection
    assert card.training.cumulative.steps == 2 and (card.inference.tile_size, card.inference.overlap) == (512, 64)
    net, _ = load_model(tmp_path / "two.pt")
    assert net(torch.rand(1, 1, 20, 20)).shape == (1, 2, 20, 20)
