"""Rare-expression sampling: rarity read from the face crops, and the datamanager's weighted epochs."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch

from latentavatar_ns.data.datamanager import LatentAvatarDataManagerConfig
from latentavatar_ns.data.dataparser import LatentAvatarDataParserConfig
from latentavatar_ns.data.rarity import draw_weights, frame_rarity


def _faces(num: int, open_mouths: tuple) -> torch.Tensor:
    """Crops of one face with pixel noise; the frames in ``open_mouths`` have a dark mouth drawn in."""
    torch.manual_seed(0)
    face = torch.rand(1, 3, 64, 64) * 0.2 + 0.6
    crops = (face + torch.randn(num, 3, 64, 64) * 0.02).clamp(0, 1)
    crops[list(open_mouths), :, 40:52, 24:40] = 0.1
    return crops


def test_the_rare_expressions_are_the_rarest_frames():
    rarity = frame_rarity(_faces(40, open_mouths=(3, 17, 30)))
    assert set(rarity.topk(3).indices.tolist()) == {3, 17, 30}
    assert rarity[[3, 17, 30]].min() > 2 * rarity[[0, 1, 2]].max()
    assert torch.isclose(rarity.mean(), torch.tensor(1.0))
    # uint8 crops (the datamanager's cache) read the same.
    as_uint8 = frame_rarity((_faces(40, open_mouths=(3, 17, 30)) * 255).round().to(torch.uint8))
    assert torch.allclose(as_uint8, rarity, rtol=0.05)


def test_no_strength_draws_every_frame_alike():
    assert torch.equal(draw_weights(_faces(10, open_mouths=(2,)), 0.0), torch.ones(10))
    weights = draw_weights(_faces(10, open_mouths=(2,)), 1.0)
    assert int(weights.argmax()) == 2 and weights.min() >= 1.0


def _manager(data: Path, strength: float):
    config = LatentAvatarDataManagerConfig(dataparser=LatentAvatarDataParserConfig(data=data),
                                           rare_frame_sampling=strength, cache_images="cpu")
    config.encoder_crop_size = 64
    return config.setup(device="cpu")


def test_weighted_epochs_draw_frames_in_proportion_to_their_weight(synthetic_dataset: Path):
    manager = _manager(synthetic_dataset, 1.0)
    n = len(manager.train_dataset)
    counts: Counter = Counter()
    for _ in range(300):
        epoch = manager.sample_train_cameras()
        assert len(epoch) == n and all(0 <= i < n for i in epoch)
        counts.update(epoch)
    drawn = np.array([counts[i] for i in range(n)], dtype=float)
    weights = np.array(manager._draw_weights)
    assert np.corrcoef(drawn, weights)[0, 1] > 0.8
    assert weights.max() / weights.min() > 1.3  # the synthetic video has commoner and rarer expressions


def test_without_rare_sampling_every_epoch_is_a_permutation(synthetic_dataset: Path):
    manager = _manager(synthetic_dataset, 0.0)
    n = len(manager.train_dataset)
    for _ in range(3):
        assert sorted(manager.sample_train_cameras()) == list(range(n))
