"""sfin-train (LightningCLI) and sfin-export: a tiny fit, resume, export, fine-tune — seconds, not a real training."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from sfin.cli import export_main, train_main
from sfin.data import STEMDataModule
from sfin.pretrained import load_model

CONFIG_DIR = Path(__file__).resolve().parents[2] / "packages" / "sfin" / "configs"


def _tiny_config(tmp: Path, max_steps: int = 3, extra_model: str = "") -> Path:
    cfg = tmp / "tiny.yaml"
    cfg.write_text(f"""\
seed_everything: 0
trainer:
  accelerator: cpu
  devices: 1
  max_steps: {max_steps}
  max_epochs: -1
  num_sanity_val_steps: 0
  logger: false
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {tmp}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: {tmp / 'ckpt'}, save_last: true, save_top_k: 0}}
model: {{width: 8, blocks: 1{extra_model}}}
data: {{mode: bf, patch: 32, epoch_length: 8, batch_size: 4, val_length: 2, val_size: 40}}
""")
    return cfg


def test_committed_configs_parse_and_describe_the_bundled_recipe():
    import yaml
    from jsonargparse import ArgumentParser  # noqa: F401  (LightningCLI's parser)

    for name in ("haadf", "bf", "finetune"):
        cfg = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())
        assert cfg["data"]["mode"] in ("haadf", "bf") and cfg["data"]["target"] == "enhance"
        assert cfg["data"]["seed"] != cfg["data"]["val_seed"]
        STEMDataModule(**cfg["data"])  # the data section is valid as-is


def test_fit_resume_and_export(tmp_path, capsys):
    cfg = _tiny_config(tmp_path)
    assert train_main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 3
    # resume to 5 steps from the checkpoint
    assert train_main(["fit", "--config", str(cfg), "--trainer.max_steps", "5", "--ckpt_path", str(ckpt)]) == 0
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 5
    out = tmp_path / "w" / "tiny_bf.pt"
    assert export_main([str(ckpt), str(out), "--config", str(cfg), "--device", "cpu"]) == 0
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["training"]["steps"] == 5 and card["training"]["wall_time_s"] > 0
    assert card["model_config"]["width"] == 8 and card["data"]["mode"] == "bf"
    assert 0.0 < card["validation"]["ssim"] <= 1.0 and card["em_noise_version"]
    assert load_model(out).head.out_channels == 8


def test_finetune_from_exported_weights(tmp_path):
    cfg = _tiny_config(tmp_path, max_steps=1)
    assert train_main(["fit", "--config", str(cfg)]) == 0
    out = tmp_path / "base.pt"
    assert export_main([str(tmp_path / "ckpt" / "last.ckpt"), str(out)]) == 0
    ft_dir = tmp_path / "ft"
    ft_dir.mkdir()
    ft = _tiny_config(ft_dir, max_steps=1, extra_model=f", init_from: {out}, lr: 0.0")
    assert train_main(["fit", "--config", str(ft)]) == 0
    # lr 0: the fine-tuned net still holds the initial weights (BN running stats aside)
    a, b = torch.load(out), torch.load(ft_dir / "ckpt" / "last.ckpt", weights_only=False)["state_dict"]
    torch.testing.assert_close(a["head.weight"], b["net.head.weight"])


def test_train_bad_noise_file_exits_2(tmp_path, capsys):
    cfg = _tiny_config(tmp_path, max_steps=1)
    assert train_main(["fit", "--config", str(cfg), "--data.noise", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_train_non_stem_mode_exits_2(tmp_path, capsys):
    cfg = _tiny_config(tmp_path, max_steps=1)
    assert train_main(["fit", "--config", str(cfg), "--data.mode", "hrtem"]) == 2
    assert "mode" in capsys.readouterr().err


def test_export_rejects_a_missing_checkpoint(tmp_path, capsys):
    assert export_main([str(tmp_path / "nope.ckpt"), str(tmp_path / "x.pt")]) == 2
    assert "nope.ckpt" in capsys.readouterr().err


def test_calibrate_then_finetune_on_own_noise(tmp_path):
    """The loop for one's own instrument: em-noise calibrate on a frame -> sfin-train with --data.noise."""
    from em_noise.calibrate import calibrate, save_params
    from em_noise.io import read_image

    example = Path(__file__).resolve().parents[2] / "examples" / "haadf_frame.tif"
    params = calibrate(read_image(example).data, "haadf")
    save_params(tmp_path / "params.json", params)
    cfg = _tiny_config(tmp_path, max_steps=1)
    assert train_main(["fit", "--config", str(cfg), "--data.mode", "haadf",
                       "--data.noise", str(tmp_path / "params.json")]) == 0
    hp = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)["datamodule_hyper_parameters"]
    assert hp["noise"] == str(tmp_path / "params.json")
