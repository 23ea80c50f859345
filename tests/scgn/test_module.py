"""SCGNModule / HRTEMDataModule / weights loading: a checkpoint alone rebuilds the net; names and paths resolve."""
import lightning as L
import pytest
import torch
from em_noise.errors import EMInputError
from em_noise.weights import bundled_names, resolve
from scgn.api import load_model
from scgn.data import HRTEMDataModule
from scgn.module import SCGNModule
from torch.utils.data import DataLoader, TensorDataset


def _fake_loader(n=8, size=24):
    g = torch.Generator().manual_seed(0)
    clean = torch.rand(n, 1, size, size, generator=g)
    noisy = clean + 0.1 * torch.randn(n, 1, size, size, generator=g)
    return DataLoader(TensorDataset(noisy, clean), batch_size=4)


def _fit(tmp_path, steps=3):
    module = SCGNModule(width=8, n_blocks=1, lr=1e-3)
    trainer = L.Trainer(max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=_fake_loader())
    ckpt = tmp_path / "m.ckpt"
    trainer.save_checkpoint(ckpt)
    return module, trainer, ckpt


def test_checkpoint_rebuilds_the_net(tmp_path):
    module, _, ckpt = _fit(tmp_path)

    loaded = SCGNModule.load_from_checkpoint(ckpt)

    assert loaded.hparams.width == 8 and loaded.hparams.n_blocks == 1
    for (k, a), (_, b) in zip(module.net.state_dict().items(), loaded.net.state_dict().items()):
        torch.testing.assert_close(a, b, msg=k)


def test_training_lowers_the_loss(tmp_path):
    torch.manual_seed(0)
    module = SCGNModule(width=8, n_blocks=1, lr=2e-3)
    x, y = next(iter(_fake_loader()))
    before = module.loss_fn(module(x), y).item()

    L.Trainer(max_steps=30, accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
              enable_checkpointing=False, default_root_dir=tmp_path).fit(module, train_dataloaders=_fake_loader())

    module.eval()
    with torch.no_grad():
        after = module.loss_fn(module(x), y).item()
    assert after < 0.7 * before


def test_resume_continues_the_step_count(tmp_path):
    _, _, ckpt = _fit(tmp_path, steps=2)
    module = SCGNModule(width=8, n_blocks=1)
    trainer = L.Trainer(max_steps=4, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=tmp_path, limit_val_batches=0)

    trainer.fit(module, train_dataloaders=_fake_loader(), ckpt_path=ckpt)

    assert trainer.global_step == 4


def test_load_model_from_checkpoint_and_init_from(tmp_path):
    module, _, ckpt = _fit(tmp_path)

    net, card = load_model(ckpt)
    fine = SCGNModule(width=8, n_blocks=1, init_from=str(ckpt))
    fine.load_net_weights(fine.hparams.init_from)

    assert card.architecture.cls == "scgn.model.SCGN" and card.architecture.config["width"] == 8
    assert card.training.run.steps == 3
    x = torch.rand(1, 1, 20, 21)
    module.eval()
    fine.eval()
    with torch.no_grad():
        torch.testing.assert_close(net(x), module(x))
        torch.testing.assert_close(fine(x), module(x))


def test_weights_references(tmp_path, tiny_weights):
    assert resolve(tiny_weights, "scgn") == tiny_weights
    net, card = load_model(tiny_weights)
    assert net.config.width == 8 and card.name == "tiny"
    with pytest.raises(EMInputError):
        resolve(tmp_path / "missing.pt", "scgn")
    with pytest.raises(EMInputError):
        resolve("not-a-bundled-name", "scgn")
    assert "hrtem" in bundled_names("scgn")


def test_mismatched_card_is_an_input_error(tmp_path, tiny_weights):
    card = tiny_weights.with_suffix(".json")
    card.write_text('{"config": {"model": {"width": 16, "n_blocks": 1}}}')  # a first-format card
    with pytest.raises(EMInputError, match="do not match"):
        load_model(tiny_weights)


def test_widened_tail_continues_a_one_output_model(tiny_weights):
    """init_from a one-output denoiser into a two-output net: the first output channel keeps its weights."""
    two = SCGNModule(width=8, n_blocks=1, out_channels=2)
    two.load_net_weights(str(tiny_weights))
    one, _ = load_model(tiny_weights)
    torch.testing.assert_close(two.net.tail.weight[:1], one.tail.weight)
    assert two._init_record["ref"] == str(tiny_weights)


def test_narrowed_tail_starts_from_the_chosen_output(tmp_path):
    """init_outputs=[1]: a one-output net takes the second channel of a two-output net's tail; a channel the init
    net does not have is refused."""
    two = SCGNModule(width=8, n_blocks=1, out_channels=2)
    path = tmp_path / "two.pt"
    torch.save(two.net.state_dict(), path)
    one = SCGNModule(width=8, n_blocks=1, out_channels=1, init_outputs=[1])
    one.load_net_weights(str(path))
    torch.testing.assert_close(one.net.tail.weight, two.net.tail.weight[1:2])
    torch.testing.assert_close(one.net.tail.bias, two.net.tail.bias[1:2])
    torch.testing.assert_close(one.net.head.weight, two.net.head.weight)
    with pytest.raises(ValueError, match="init_outputs"):
        SCGNModule(width=8, n_blocks=1, out_channels=1, init_outputs=[2]).load_net_weights(str(path))


def test_datamodule_yields_hrtem_pairs():
    dm = HRTEMDataModule(target="localize", patch=32, batch_size=2, epoch_length=4, val_length=2, val_size=48)
    dm.setup("fit")

    x, y = next(iter(dm.train_dataloader()))
    xv, yv = next(iter(dm.val_dataloader()))

    assert dm.hparams.mode == "hrtem"
    assert x.shape == (2, 1, 32, 32) and y.shape == x.shape
    assert xv.shape[-1] == 48
    assert 0.0 <= float(y.min()) and float(y.max()) <= 1.0


def test_datamodule_rejects_shared_seeds():
    with pytest.raises(EMInputError):
        HRTEMDataModule(seed=5, val_seed=5)
