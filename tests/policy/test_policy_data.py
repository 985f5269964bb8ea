"""Tests for policy.data (reading trajgen's episodes, the input tensor, the episode-level split) and policy.augment."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from policy_test_helpers import SIZE

from policy.augment import AugmentConfig, augment_batch
from policy.data import load_demos, make_policy_input, resize_frames, split_episodes, stack_frames


def test_make_policy_input_channels() -> None:
    rgb = np.full((4, 5, 3), 200, np.uint8)
    mask = np.zeros((4, 5), np.uint8)
    mask[0, 0] = 1  # object
    mask[1, 1] = 2  # hand
    x = make_policy_input(rgb, mask)
    assert x.shape == (5, 4, 5) and x.dtype == torch.float32
    assert x[4, 0, 0] == 1 and x[3, 0, 0] == 0
    assert x[3, 1, 1] == 1 and x[4, 1, 1] == 0
    # background removed: RGB only where hand or object
    assert torch.allclose(x[:3, 0, 0], torch.full((3,), 200 / 255))
    assert x[:3, 2, 2].abs().sum() == 0
    with pytest.raises(ValueError, match="same size"):
        make_policy_input(rgb, mask[:3])


def test_load_demos_reads_trajgen_episodes(demo_dir) -> None:
    demos = load_demos([demo_dir])
    assert len(demos.episodes) == 6
    assert demos.scene_ids == ["toy_a", "toy_b"]
    e = demos.episodes[0]
    assert e.rgb.shape == (5, SIZE, SIZE, 3) and e.mask.shape == (5, SIZE, SIZE)
    assert e.cls.tolist() == [0, 0, 0, 0, 1]
    assert np.abs(e.actions[-1]).max() == 0
    assert demos.camera["width"] == SIZE and demos.camera["fx"] > 0
    assert demos.plan["radius"] == 0.7
    half = load_demos([demo_dir], image_size=16)
    assert half.episodes[0].rgb.shape == (5, 16, 16, 3)
    assert half.camera["fx"] == pytest.approx(demos.camera["fx"] / 2)


def test_resize_frames_keeps_labels() -> None:
    rgb = np.random.default_rng(0).integers(0, 255, (2, 8, 12, 3), dtype=np.uint8)
    mask = np.random.default_rng(1).integers(0, 3, (2, 8, 12), dtype=np.uint8)
    r, m = resize_frames(rgb, mask, 4)
    assert r.shape == (2, 4, 4, 3) and m.shape == (2, 4, 4)
    assert set(np.unique(m)) <= {0, 1, 2}


@settings(max_examples=50, deadline=None)
@given(
    st.lists(st.integers(0, 12), min_size=1, max_size=60),
    st.floats(0.0, 0.9),
    st.integers(0, 2**31 - 1),
)
def test_split_has_no_leakage(group_ids, val_fraction, seed) -> None:
    groups = [f"ep{g}" for g in group_ids]
    train, val = split_episodes(groups, val_fraction, seed)
    assert sorted(train + val) == list(range(len(groups)))
    assert not ({groups[i] for i in train} & {groups[i] for i in val})
    if val_fraction > 0 and len(set(groups)) >= 2:
        assert val and train
    assert split_episodes(groups, val_fraction, seed) == (train, val)  # seeded


def test_episode_split_never_shares_frames(demo_dir) -> None:
    demos = load_demos([demo_dir])
    keys = [e.key for e in demos.episodes]
    train, val = split_episodes(keys, 0.34, seed=3)
    assert len(val) == 2 and len(train) == 4
    _, _, _, _, ep_train = stack_frames([demos.episodes[i] for i in train])
    assert ep_train.unique().numel() == 4
    by_scene = split_episodes([e.scene_id for e in demos.episodes], 0.5, seed=0)
    scenes = [{demos.episodes[i].scene_id for i in side} for side in by_scene]
    assert not (scenes[0] & scenes[1])


def test_augmentations() -> None:
    g = torch.Generator().manual_seed(0)
    rgb = torch.rand(6, 3, 16, 16)
    masks = torch.zeros(6, 2, 16, 16)
    masks[:, 1, 4:12, 4:12] = 1
    masks[:, 0, 12:15, 4:12] = 1
    off = AugmentConfig(enabled=False)
    r0, m0 = augment_batch(rgb, masks, off, g)
    assert torch.equal(r0, rgb) and torch.equal(m0, masks)
    cfg = AugmentConfig(crop_prob=1.0, mask_morph_prob=1.0)
    r1, m1 = augment_batch(rgb, masks, cfg, torch.Generator().manual_seed(1))
    r2, m2 = augment_batch(rgb, masks, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(r1, r2) and torch.equal(m1, m2)  # seeded
    assert r1.shape == rgb.shape and m1.shape == masks.shape
    assert ((r1 >= 0) & (r1 <= 1)).all()
    assert set(m1.unique().tolist()) <= {0.0, 1.0}
    assert not (m1[:, 0] * m1[:, 1]).any()  # never both hand and object
    assert not torch.equal(m1, masks)
    with pytest.raises(ValueError, match="crop_scale"):
        AugmentConfig(crop_scale=1.5).validate()
