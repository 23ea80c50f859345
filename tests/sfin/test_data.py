"""SFIN training data: the 'stem' mode interleaves HAADF pairs and BF pairs turned to HAADF polarity."""
import torch
from em_noise.synth import PairDataset, SynthConfig
from sfin.data import PolarityMixDataset, STEMDataModule


def test_stem_mix_inverts_bf_items_only():
    haadf = PairDataset(SynthConfig(mode="haadf", size=32), 4, seed=3)
    bf = PairDataset(SynthConfig(mode="bf", size=32), 4, seed=4)
    mix = PolarityMixDataset(haadf, bf)

    assert len(mix) == 8
    x0, y0 = mix[0]
    torch.testing.assert_close(x0, haadf[0][0])
    x3, y3 = mix[3]
    torch.testing.assert_close(x3, 1.0 - bf[1][0])
    torch.testing.assert_close(y3, 1.0 - bf[1][1])


def test_stem_datamodule_serves_both_detectors_with_disjoint_seeds():
    dm = STEMDataModule(mode="stem", size=32, patch=None, batch_size=2, epoch_length=4, val_length=4, val_size=32,
                        synth={"recipe": {"sfin-paper": 0.5, "em-noise": 0.5}})
    dm.setup("fit")
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == (2, 1, 32, 32) and y.shape == (2, 1, 32, 32)
    assert dm._train.haadf.seed != dm._train.bf.seed
    assert dm._val.haadf.seed not in (dm._train.haadf.seed, dm._train.bf.seed)
    assert dm.hparams["mode"] == "stem"
