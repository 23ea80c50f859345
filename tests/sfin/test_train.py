"""sfin-train (LightningCLI) and sfin-train export: a tiny fit, resume, export, fine-tune — seconds, not a training."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from em_noise.modelcli import config_dir, config_names, resolve_config
from em_noise.weights import read_card
from sfin.api import load_model
from sfin.cli import train_main
from sfin.data import STEMDataModule


def _export(ckpt: Path, out: Path, name: str, *extra: str) -> int:
    return train_main(["export", str(ckpt), "--name", name, "-o", str(out), "--device", "cpu", *extra])


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


def test_packaged_configs_parse_and_resolve_by_name():
    import yaml

    assert set(config_names("sfin")) >= {"haadf", "bf", "finetune", "stem"}
    for name in config_names("sfin"):
        cfg = yaml.safe_load((config_dir("sfin") / f"{name}.yaml").read_text())
        assert cfg["data"]["mode"] in ("haadf", "bf", "stem") and cfg["data"]["target"] == "enhance"
        assert cfg["data"]["seed"] != cfg["data"]["val_seed"]
        STEMDataModule(**cfg["data"])  # the data section is valid as-is
    assert resolve_config("stem", "sfin") == config_dir("sfin") / "stem.yaml"
    with pytest.raises(Exception, match="packaged: bf, finetune, haadf, stem"):
        resolve_config("nope", "sfin")


def test_fit_resume_and_export(tmp_path, capsys):
    cfg = _tiny_config(tmp_path)
    assert train_main(["fit", "--config", str(cfg)]) == 0
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 3
    # resume to 5 steps from the checkpoint
    assert train_main(["fit", "--config", str(cfg), "--trainer.max_steps", "5", "--ckpt_path", str(ckpt)]) == 0
    assert torch.load(ckpt, map_location="cpu", weights_only=False)["global_step"] == 5
    from em_noise.training import hardware
    from em_noise.weights import wallclock_state

    # recorded by the fit, so that the card names the fit's machine
    assert wallclock_state(torch.load(ckpt, map_location="cpu", weights_only=False))["hardware"] == hardware()
    assert _export(ckpt, tmp_path / "w", "tiny_bf", "--config", str(cfg)) == 0
    card = read_card(tmp_path / "w" / "tiny_bf.pt")
    assert card.training.run.steps == card.training.cumulative.steps == 5 and card.training.run.wall_time_s > 0
    assert card.architecture.config["width"] == 8 and card.io.modes == ["bf"] and card.field_of_view_px == 32
    assert 0.0 < card.validation.metrics["enhanced"]["ssim"] <= 1.0 and card.validation.n_images == 2
    assert "max_steps" in card.training.config_yaml and card.versions["sfin"] and card.training.hardware
    assert (card.inference.tile_size, card.inference.overlap) == (512, 128)  # em_noise.weights' defaults
    assert load_model(tmp_path / "w" / "tiny_bf.pt")[0].head.out_channels == 8


def test_continuing_exported_weights_carries_their_budget_forward(tmp_path):
    cfg = _tiny_config(tmp_path, max_steps=2)
    assert train_main(["fit", "--config", str(cfg)]) == 0
    assert _export(tmp_path / "ckpt" / "last.ckpt", tmp_path, "base") == 0
    out = tmp_path / "base.pt"
    base = read_card(out).training.cumulative
    ft_dir = tmp_path / "ft"
    ft_dir.mkdir()
    ft = _tiny_config(ft_dir, max_steps=1, extra_model=f", init_from: {out}, lr: 0.0")
    assert train_main(["fit", "--config", str(ft)]) == 0
    ckpt = ft_dir / "ckpt" / "last.ckpt"
    # lr 0: the fine-tuned net still holds the initial weights (BN running stats aside)
    a, b = torch.load(out), torch.load(ckpt, weights_only=False)["state_dict"]
    torch.testing.assert_close(a["head.weight"], b["net.head.weight"])
    # resume the continued run, then replace the base model's card (as a re-export in place would): the budget the
    # fit recorded when it loaded the base model is the one carried forward
    assert train_main(["fit", "--config", str(ft), "--trainer.max_steps", "2", "--ckpt_path", str(ckpt)]) == 0
    raw = json.loads(out.with_suffix(".json").read_text())
    raw["training"]["cumulative"] = {"steps": 10_000, "wall_time_s": 1e6}
    out.with_suffix(".json").write_text(json.dumps(raw))
    assert _export(ckpt, tmp_path, "continued") == 0
    card = read_card(tmp_path / "continued.pt")
    assert card.training.run.steps == 2 and card.training.init_from == str(out)
    assert card.training.cumulative.steps == base.steps + 2
    assert card.training.cumulative.wall_time_s == pytest.approx(base.wall_time_s + card.training.run.wall_time_s,
                                                                 abs=0.2)
    # a checkpoint of an earlier version that recorded nothing: the card of init_from now, unless that card is an
    # export of this same run (a bundled model re-exported in place, then exported again under a second name)
    obj = torch.load(ckpt, weights_only=False)
    del obj["em_noise"]
    old = ft_dir / "old.ckpt"
    torch.save(obj, old)
    raw["training"]["cumulative"] = {"steps": base.steps, "wall_time_s": base.wall_time_s}
    out.with_suffix(".json").write_text(json.dumps(raw))
    assert _export(old, tmp_path, "base") == 0  # in place over the model it continued
    assert _export(old, tmp_path, "second") == 0
    first, second = read_card(out).training.cumulative, read_card(tmp_path / "second.pt").training.cumulative
    assert first == second and first.steps == base.steps + 2
    # a checkpoint that recorded nothing: --previous names the model it continued
    previous = str(tmp_path / "continued.pt")
    assert _export(tmp_path / "ckpt" / "last.ckpt", tmp_path, "again", "--previous", previous) == 0
    assert read_card(tmp_path / "again.pt").training.cumulative.steps == base.steps + 2 + 2


def test_train_bad_noise_file_exits_2(tmp_path, capsys):
    cfg = _tiny_config(tmp_path, max_steps=1)
    assert train_main(["fit", "--config", str(cfg), "--data.noise", str(tmp_path / "none.json")]) == 2
    assert "none.json" in capsys.readouterr().err


def test_train_non_stem_mode_exits_2(tmp_path, capsys):
    cfg = _tiny_config(tmp_path, max_steps=1)
    assert train_main(["fit", "--config", str(cfg), "--data.mode", "hrtem"]) == 2
    assert "mode" in capsys.readouterr().err


def test_export_rejects_a_missing_checkpoint_and_a_state_dict(tmp_path, capsys, tiny_weights):
    assert _export(tmp_path / "nope.ckpt", tmp_path, "x") == 2
    assert "nope.ckpt" in capsys.readouterr().err
    assert _export(tiny_weights, tmp_path, "x") == 2
    assert "not a Lightning checkpoint" in capsys.readouterr().err


def test_train_help_lists_the_packaged_configs(capsys):
    assert train_main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "fit,validate,test,predict,export" in out and "bf, finetune, haadf, stem" in out
    assert train_main(["bogus"]) == 2


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


@pytest.mark.parametrize("case", ["missing-ckpt", "folder-ckpt", "missing-noise", "malformed-noise", "lambda-50",
                                  "negative-std", "noise-in-config"])
def test_bad_resume_or_noise_file_is_one_line_and_nothing_written(tmp_path, capsys, case):
    from em_noise.params import default_params

    cfg = _tiny_config(tmp_path)
    noise = tmp_path / "noise.json"
    data = default_params("bf").to_dict()
    if case == "lambda-50":
        data["pointwise"]["lam"] = 50.0
    if case == "negative-std":
        data["read_sigma"] = -1.0
    noise.write_text("{not json" if case == "malformed-noise" else json.dumps(data))
    extra, needle = {
        "missing-ckpt": (["--ckpt_path", str(tmp_path / "missing.ckpt")], "missing.ckpt"),
        "folder-ckpt": ([f"--ckpt_path={tmp_path}"], "folder"),
        "missing-noise": (["--data.noise", str(tmp_path / "nothere.json")], "nothere.json"),
        "malformed-noise": (["--data.noise", str(noise)], "not valid JSON"),
        "lambda-50": (["--data.noise", str(noise)], "pointwise.lam = 50.0 is outside the allowed range [-1, 2]"),
        "negative-std": ([f"--data.noise={noise}"], "read_sigma = -1.0 is outside the allowed range [0, 255]"),
        "noise-in-config": ([], "pointwise.lam = 50.0"),
    }[case]
    if case == "noise-in-config":
        data["pointwise"]["lam"] = 50.0
        noise.write_text(json.dumps(data))
        cfg.write_text(cfg.read_text().replace("data: {", f"data: {{noise: {noise}, "))
    before = sorted(tmp_path.iterdir())
    assert train_main(["fit", "--config", str(cfg), *extra]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and needle in err[0] and err[0].startswith("sfin-train: error:"), err
    assert sorted(tmp_path.iterdir()) == before  # no config, log or checkpoint folder written


def test_version(capsys):
    import sfin

    assert train_main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"sfin-train {sfin.__version__}"


@pytest.mark.slow
def test_ctrl_c_during_fit_leaves_a_checkpoint_that_resumes(tmp_path):
    import time

    from em_noise.testing import interrupt, run_cli, script

    cfg = _tiny_config(tmp_path, max_steps=100000)
    started: list[float] = []

    def training(pid: int) -> bool:  # the fit has begun (its config is saved) a few seconds ago
        if not started and (tmp_path / "config.yaml").exists():
            started.append(time.monotonic())
        return bool(started) and time.monotonic() - started[0] > 3.0

    res = interrupt([script("sfin-train"), "fit", "--config", str(cfg)], when=training, timeout=20)
    assert res.code == 130, res.stderr
    assert res.lines[-1] == "sfin-train: interrupted" and "Traceback" not in res.stderr
    ckpt = tmp_path / "ckpt" / "last.ckpt"
    step = torch.load(ckpt, weights_only=False)["global_step"]
    assert step > 0 and f"resume with --ckpt_path {ckpt}" in res.stderr
    resumed = run_cli([script("sfin-train"), "fit", "--config", str(_tiny_config(tmp_path, max_steps=step + 2)),
                       "--ckpt_path", str(ckpt)])
    assert resumed.code == 0 and "Restored all states" in resumed.stderr + resumed.stdout, resumed.stderr
