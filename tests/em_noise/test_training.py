"""em_noise.training: the shared restoration LightningModule and the synthetic-data DataModule."""
from __future__ import annotations

import lightning as L
import numpy as np
import pytest
import torch
from em_noise.errors import EMInputError
from em_noise.training import (
    EpochBlockSampler,
    RestorationModule,
    SynthDataModule,
    checkpoint_wall_time_s,
    evaluate,
    export_weights,
)
from em_noise.weights import load_state
from torch import nn
from torch.utils.data import DataLoader, TensorDataset


class TinyModule(RestorationModule):
    def __init__(self, width: int = 4, lr: float = 2e-4, milestones: list[int] | None = None, gamma: float = 0.5,
                 init_from: str | None = None):
        super().__init__(lr=lr, milestones=milestones, gamma=gamma, init_from=init_from)

    def build_net(self) -> nn.Module:
        w = self.hparams.width
        return nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 3, padding=1))


class KwargsModule(RestorationModule):
    """A subclass passing the base's arguments on through ``**kwargs``, as the method packages do."""

    def __init__(self, width: int = 4, **kwargs):
        super().__init__(**kwargs)

    def build_net(self) -> nn.Module:
        w = self.hparams.width
        return nn.Sequential(nn.Conv2d(1, w, 3, padding=1), nn.ReLU(), nn.Conv2d(w, 1, 3, padding=1))


def _pairs(n: int = 8, size: int = 16, seed: int = 0) -> TensorDataset:
    g = torch.Generator().manual_seed(seed)
    y = torch.rand(n, 1, size, size, generator=g)
    x = y + 0.1 * torch.randn(n, 1, size, size, generator=g)
    return TensorDataset(x, y)


def _fit(module: RestorationModule, tmp_path, max_steps: int = 4, ckpt_path=None) -> L.Trainer:
    trainer = L.Trainer(max_steps=max_steps, accelerator="cpu", devices=1, logger=False, default_root_dir=tmp_path,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(module, DataLoader(_pairs(), batch_size=4), DataLoader(_pairs(4, seed=1), batch_size=2),
                ckpt_path=ckpt_path)
    return trainer


def test_subclass_hparams_are_saved_and_rebuild_the_net(tmp_path):
    L.seed_everything(0)
    module = TinyModule(width=6, lr=1e-3)
    trainer = _fit(module, tmp_path)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=False)["hyper_parameters"]["width"] == 6
    rebuilt = TinyModule.load_from_checkpoint(ckpt)
    x = torch.rand(1, 1, 9, 11)
    assert rebuilt.net[0].out_channels == 6
    torch.testing.assert_close(rebuilt.eval()(x), module.eval()(x))


def test_validation_logs_psnr_ssim_and_loss(tmp_path):
    L.seed_everything(0)
    trainer = _fit(TinyModule(), tmp_path)
    for key in ("val_psnr", "val_ssim", "val_loss", "train_loss"):
        assert key in trainer.callback_metrics
    assert np.isfinite(float(trainer.callback_metrics["val_psnr"]))


def test_default_milestones_follow_max_steps(tmp_path):
    trainer = _fit(TinyModule(), tmp_path, max_steps=8)
    sched = trainer.lr_scheduler_configs[0]
    assert sched.interval == "step"
    assert sorted(sched.scheduler.milestones) == [4, 6]
    assert trainer.optimizers[0].param_groups[0]["lr"] == pytest.approx(2e-4 * 0.25)


def test_wall_clock_is_stored_in_checkpoint(tmp_path):
    trainer = _fit(TinyModule(), tmp_path)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    wall = checkpoint_wall_time_s(ckpt)
    assert wall is not None and wall > 0


def test_init_from_loads_weights_for_a_fresh_fit_only(tmp_path):
    donor = TinyModule()
    with torch.no_grad():
        for p in donor.net.parameters():
            p.fill_(0.125)
    pt, _ = export_weights(donor.net, tmp_path / "donor.pt", {"note": "test"})
    module = TinyModule(init_from=str(pt), lr=0.0)  # lr 0: the loaded weights survive the fit unchanged
    _fit(module, tmp_path, max_steps=1)
    assert torch.allclose(module.net[0].weight, torch.full_like(module.net[0].weight, 0.125))


def test_checkpoints_record_the_budget_carried_in_by_init_from(tmp_path):
    """A fit started from exported weights stores their cumulative budget in its checkpoints, resumes included."""
    from em_noise.weights import Architecture, Budget, IOSpec, ModelCard, Output, Training, save

    donor = TinyModule()
    card = ModelCard(name="donor", architecture=Architecture(cls="torch.nn.Identity"), parameters=0,
                     io=IOSpec(modes=["haadf"], outputs=[Output(name="enhanced", scale="target")]),
                     training=Training(cumulative=Budget(steps=1000, wall_time_s=500.0)))
    pt, _ = save(donor.net, tmp_path / "donor.pt", card)
    trainer = _fit(TinyModule(init_from=str(pt)), tmp_path, max_steps=2)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    rec = torch.load(ckpt, weights_only=False)["em_noise"]
    assert rec["init"] == {"ref": str(pt), "cumulative": {"steps": 1000, "wall_time_s": 500.0}}
    assert rec["net"]["cls"] == "torch.nn.modules.container.Sequential"
    resumed = TinyModule(init_from=str(pt))
    trainer = _fit(resumed, tmp_path, max_steps=3, ckpt_path=ckpt)
    trainer.save_checkpoint(ckpt)
    assert torch.load(ckpt, weights_only=False)["em_noise"]["init"]["cumulative"]["steps"] == 1000


def test_resume_ignores_init_from(tmp_path):
    donor = TinyModule()
    pt, _ = export_weights(donor.net, tmp_path / "donor.pt", {})
    trainer = _fit(TinyModule(init_from=str(pt)), tmp_path, max_steps=2)
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    pt.unlink()  # the fine-tuning source is gone: resuming must not need it
    resumed = TinyModule(init_from=str(pt))
    _fit(resumed, tmp_path, max_steps=3, ckpt_path=ckpt)
    assert resumed.trainer.global_step == 3


def test_load_state_reads_checkpoints_and_state_dicts(tmp_path):
    module = TinyModule()
    trainer = _fit(module, tmp_path, max_steps=1)
    trainer.save_checkpoint(tmp_path / "m.ckpt")
    pt, card = export_weights(module.net, tmp_path / "w.pt", {"a": 1})
    a, b = load_state(tmp_path / "m.ckpt"), load_state(pt)
    assert a.keys() == b.keys() == module.net.state_dict().keys()
    assert card.read_text().strip().startswith("{")


def test_load_state_rejects_bad_files(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(EMInputError, match="bad.pt"):
        load_state(bad)
    with pytest.raises(EMInputError, match="not found"):
        load_state(tmp_path / "missing.pt")


def test_evaluate_returns_mean_psnr_ssim():
    identity = nn.Identity()
    x = torch.rand(3, 1, 16, 16)
    res = evaluate(identity, DataLoader(TensorDataset(x, x.clone()), batch_size=2))
    assert res["n_images"] == 3 and res["ssim"] == pytest.approx(1.0, abs=1e-6) and res["psnr"] > 60


def test_epoch_block_sampler_draws_fresh_disjoint_indices():
    s = EpochBlockSampler(5)
    first = list(s)
    s.set_epoch(3)
    assert first == [0, 1, 2, 3, 4] and list(s) == [15, 16, 17, 18, 19] and len(s) == 5
    assert list(s) == [20, 21, 22, 23, 24]  # without set_epoch (DDP wrapper) the next block follows


def test_synth_datamodule_shapes_and_fixed_validation():
    pytest.importorskip("em_noise.synth")
    dm = SynthDataModule(mode="haadf", size=64, patch=32, batch_size=2, epoch_length=4, val_length=2, val_size=48)
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (2, 1, 32, 32) and x.dtype == torch.float32
    v1 = next(iter(dm.val_dataloader()))
    dm2 = SynthDataModule(mode="haadf", size=64, patch=32, batch_size=2, epoch_length=4, val_length=2, val_size=48)
    dm2.setup("validate")
    v2 = next(iter(dm2.val_dataloader()))
    assert v1[0].shape == (2, 1, 48, 48)
    torch.testing.assert_close(v1[0], v2[0])
    torch.testing.assert_close(v1[1], v2[1])
    assert not torch.equal(x[:, :, :32, :32], v1[0][:, :, :32, :32])


def test_synth_datamodule_rejects_bad_arguments():
    with pytest.raises(EMInputError, match="mode"):
        SynthDataModule(mode="sem")
    with pytest.raises(EMInputError, match="target"):
        SynthDataModule(target="segment")
    with pytest.raises(EMInputError, match="val_seed"):
        SynthDataModule(seed=5, val_seed=5)


def test_joint_target_has_image_and_atom_channels():
    from em_noise.synth import PairDataset, SynthConfig

    ds = PairDataset(SynthConfig(mode="hrtem", size=64), 2, target="denoise+localize", patch=32)
    single = PairDataset(SynthConfig(mode="hrtem", size=64), 2, target="denoise", patch=32)
    atoms = PairDataset(SynthConfig(mode="hrtem", size=64), 2, target="localize", patch=32)

    x, y = ds[1]

    assert x.shape == (1, 32, 32) and y.shape == (2, 32, 32)
    torch.testing.assert_close(y[:1], single[1][1])
    torch.testing.assert_close(y[1:], atoms[1][1])


def test_widening_the_tail_keeps_the_first_channel_weights(tmp_path):
    from scgn.model import SCGN
    from scgn.module import SCGNModule

    one = SCGN(width=8, n_blocks=1)
    path = tmp_path / "one.pt"
    torch.save(one.state_dict(), path)
    module = SCGNModule(width=8, n_blocks=1, out_channels=2, loss="l1+mse")
    before = module.net.tail.weight[1].clone()

    module.load_net_weights(path)

    torch.testing.assert_close(module.net.tail.weight[:1], one.tail.weight)
    torch.testing.assert_close(module.net.tail.weight[1], before)
    torch.testing.assert_close(module.net.head.weight, one.head.weight)


@pytest.mark.slow
def test_compiled_training_steps_match_eager_and_keep_the_plain_state_dict(tmp_path):
    states = []
    for compiled in (False, True):
        L.seed_everything(0)
        module = KwargsModule(compile=compiled, lr=1e-2)
        init = {k: v.clone() for k, v in module.net.state_dict().items()}
        _fit(module, tmp_path / str(compiled), max_steps=3)
        assert ("_compiled_net" in module.__dict__) == compiled
        assert all(not k.startswith("_compiled") for k in module.state_dict())
        states.append(module.net.state_dict())
        assert max(float((states[-1][k] - init[k]).abs().max()) for k in init) > 1e-4  # the steps moved it
    assert states[0].keys() == states[1].keys()
    for k in states[0]:
        torch.testing.assert_close(states[1][k], states[0][k], rtol=1e-4, atol=1e-5)
