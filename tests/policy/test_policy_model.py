"""Tests for policy.model, the Eq. 17 loss and the action normalisation."""

from __future__ import annotations

import math

import pytest
import torch

from policy.model import (
    ACTION_DIM,
    INPUT_CHANNELS,
    MASK_STATS_DIM,
    ExportWrapper,
    ModelConfig,
    PolicyNet,
    mask_statistics,
)
from policy.train import eq17_loss


@pytest.mark.parametrize("size", [128, 224])
def test_output_shapes(size: int) -> None:
    net = PolicyNet(ModelConfig(size, 8)).eval()
    x = torch.rand(2, len(INPUT_CHANNELS), size, size)
    out = net(x)
    assert out.shape == (2, ACTION_DIM + 1)
    action, score = net.predict(x)
    assert action.shape == (2, 6) and score.shape == (2,)
    assert ((score >= 0) & (score <= 1)).all()
    a2, s2 = ExportWrapper(net)(x)
    torch.testing.assert_close(a2, action)
    torch.testing.assert_close(s2, score)


def test_resnet18_layout() -> None:
    net = PolicyNet(ModelConfig(128, 64))
    assert net.conv1.in_channels == 5 and net.conv1.kernel_size == (7, 7)
    assert [len(s) for s in (net.layer1, net.layer2, net.layer3, net.layer4)] == [2, 2, 2, 2]
    assert net.fc.in_features == 512 and net.fc.out_features == 7
    # torchvision's resnet18 has 11.69M parameters with a 3-channel stem and 1000 classes; ours differs
    # only in the stem (5 channels: +6272) and the head (7 outputs: -509,496)
    n = sum(p.numel() for p in net.parameters())
    assert n == 11_689_512 + 2 * 64 * 49 - (512 * 1000 + 1000) + (512 * 7 + 7)


def test_bad_input_shape() -> None:
    net = PolicyNet(ModelConfig(32, 4))
    with pytest.raises(ValueError, match="expects"):
        net(torch.rand(1, 3, 32, 32))
    with pytest.raises(ValueError, match="image_size"):
        ModelConfig(8, 4).validate()


def test_normalisation_round_trip() -> None:
    net = PolicyNet(ModelConfig(32, 4))
    mean = torch.tensor([0.01, -0.02, 0.03, 0.001, 0.002, 0.03])
    std = torch.tensor([0.02, 0.03, 0.01, 0.005, 0.004, 0.01])
    net.set_action_stats(mean, std)
    a = torch.randn(10, 6) * std + mean
    torch.testing.assert_close(net.denormalize_action(net.normalize_action(a)), a)
    n = net.normalize_action(a)
    torch.testing.assert_close(net.normalize_action(mean[None]), torch.zeros(1, 6))
    assert n.shape == a.shape
    # the statistics are buffers: saved with the weights
    assert {"action_mean", "action_std"} <= set(net.state_dict())


def test_eq17_loss_values() -> None:
    out = torch.zeros(2, 7)
    target = torch.tensor([[1.0, 0.0, 0.0, 0.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]])
    cls = torch.tensor([1.0, 0.0])
    total, parts = eq17_loss(out, target, cls)
    # L_R = mean over 2x3 of squares = 1/6; L_T = 4/6; L_C = mean((0.5-1)^2, 0.5^2) = 0.25
    assert parts["L_R"].item() == pytest.approx(1 / 6)
    assert parts["L_T"].item() == pytest.approx(4 / 6)
    assert parts["L_C"].item() == pytest.approx(0.25)
    assert total.item() == pytest.approx(100 * 4 / 6 + 100 * 1 / 6 + 0.25)
    total_w, _ = eq17_loss(out, target, cls, lambda_t=1.0, lambda_r=2.0, cls_pos_weight=3.0)
    assert total_w.item() == pytest.approx(4 / 6 + 2 / 6 + 0.25)
    total_c, parts_c = eq17_loss(out, target, cls, lambda_c=40.0)  # lambda_C scales L_C only
    assert parts_c["L_C"].item() == pytest.approx(0.25)
    assert total_c.item() == pytest.approx(100 * 4 / 6 + 100 * 1 / 6 + 40 * 0.25)


def test_eq17_loss_gradients_flow() -> None:
    net = PolicyNet(ModelConfig(32, 4))
    x = torch.rand(4, 5, 32, 32)
    loss, _ = eq17_loss(net(x), torch.randn(4, 6), torch.tensor([0.0, 0.0, 0.0, 1.0]))
    loss.backward()
    assert net.fc.weight.grad is not None and torch.isfinite(net.fc.weight.grad).all()
    assert net.conv1.weight.grad.abs().sum() > 0


def test_eq17_unlabelled_frames_leave_l_c() -> None:
    out = torch.zeros(3, 7)
    target = torch.zeros(3, 6)
    _, parts = eq17_loss(out, target, torch.tensor([1.0, float("nan"), float("nan")]))
    assert parts["L_C"].item() == pytest.approx(0.25)
    total, parts = eq17_loss(out, target, torch.full((3,), float("nan")))
    assert parts["L_C"].item() == 0.0 and torch.isfinite(total)


def test_stem_without_pool_doubles_every_stage_resolution(tmp_path) -> None:
    pooled, unpooled = (
        PolicyNet(ModelConfig(64, 4)).eval(),
        PolicyNet(ModelConfig(64, 4, stem_pool=False)).eval(),
    )
    unpooled.load_state_dict(pooled.state_dict())  # the same parameters: only the max-pool goes
    x = torch.rand(2, len(INPUT_CHANNELS), 64, 64)
    feats = []
    for net in (pooled, unpooled):
        h = net.maxpool(net.relu(net.bn1(net.conv1(x))))
        feats.append(net.layer4(net.layer3(net.layer2(net.layer1(h)))).shape[-2:])
    assert tuple(feats[0]) == (2, 2) and tuple(feats[1]) == (4, 4)
    assert unpooled(x).shape == (2, ACTION_DIM + 1)
    assert not torch.allclose(unpooled(x), pooled(x))
    # the setting survives the config round trip (checkpoints), and old configs without it keep the pool
    assert ModelConfig.from_dict(unpooled.cfg.as_dict()) == unpooled.cfg
    old = pooled.cfg.as_dict()
    old.pop("stem_pool")
    assert ModelConfig.from_dict(old).stem_pool is True


def test_input_pool_is_the_small_network_on_the_area_averaged_image(tmp_path) -> None:
    """input_pool = 2 at 128 px equals the 64 px network on the 2x2-averaged input (soft masks)."""
    small = PolicyNet(ModelConfig(64, 4)).eval()
    pooled = PolicyNet(ModelConfig(128, 4, input_pool=2)).eval()
    pooled.load_state_dict(small.state_dict())  # no parameters of its own
    # a hard-edged disc at 128 px: its 64 px average has fractional coverage along the edge
    yy, xx = torch.meshgrid(torch.arange(128.0), torch.arange(128.0), indexing="ij")
    disc = (((yy - 60.3) ** 2 + (xx - 70.7) ** 2) < 21.5**2).float()
    x = torch.rand(2, len(INPUT_CHANNELS), 128, 128)
    x[:, 4] = disc
    ref = x.reshape(2, 5, 64, 2, 64, 2).mean(dim=(3, 5))  # the slow reference: explicit 2x2 means
    soft = ref[:, 4]
    assert ((soft > 0) & (soft < 1)).any() and set(soft.unique().tolist()) <= {0.0, 0.25, 0.5, 0.75, 1.0}
    torch.testing.assert_close(pooled(x), small(ref), atol=1e-5, rtol=1e-5)
    assert ModelConfig.from_dict(pooled.cfg.as_dict()) == pooled.cfg
    old = small.cfg.as_dict()
    old.pop("input_pool")
    assert ModelConfig.from_dict(old).input_pool == 1
    for bad in (3, 0, 4):  # 3 does not divide 64, 0 is no factor, 4 would leave 16 px
        with pytest.raises(ValueError, match="input_pool"):
            ModelConfig(64, 4, input_pool=bad).validate()
    # the exported graph takes the full-size image and matches torch
    ort = pytest.importorskip("onnxruntime")
    from policy.export import export_onnx

    path = tmp_path / "p.onnx"
    export_onnx(pooled, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert sess.get_inputs()[0].shape[-2:] == [128, 128]
    a, s = sess.run(None, {"image": x.numpy()})
    a_ref, s_ref = pooled.predict(x)
    assert abs(a - a_ref.numpy()).max() <= 1e-4 and abs(s - s_ref.numpy()).max() <= 1e-4


def _moments_reference(mask) -> list[float]:
    """Per-pixel loop over a [H, W] mask: log area, centroid and spread in [-1, 1] image units."""
    h, w = mask.shape
    total = sx = sy = 0.0
    for i in range(h):
        for j in range(w):
            m = float(mask[i, j])
            total += m
            sx += m * ((j + 0.5) * 2 / w - 1)
            sy += m * ((i + 0.5) * 2 / h - 1)
    if total == 0:
        return [math.log(1e-4), 0.0, 0.0, 0.0, 0.0]
    cx, cy = sx / total, sy / total
    vx = vy = 0.0
    for i in range(h):
        for j in range(w):
            m = float(mask[i, j])
            vx += m * ((j + 0.5) * 2 / w - 1 - cx) ** 2
            vy += m * ((i + 0.5) * 2 / h - 1 - cy) ** 2
    return [math.log(max(total / (h * w), 1e-4)), cx, cy, math.sqrt(vx / total), math.sqrt(vy / total)]


def test_mask_statistics_match_a_per_pixel_loop_and_the_geometry() -> None:
    """mask_statistics equals the slow loop; a disc gives its area, centre and radius / 2."""
    yy, xx = torch.meshgrid(torch.arange(64.0), torch.arange(96.0), indexing="ij")
    x = torch.zeros(2, len(INPUT_CHANNELS), 64, 96)
    x[0, 3] = (((yy - 20.5) ** 2 + (xx - 30.5) ** 2) < 9.0**2).float()  # hand: a disc, radius 9 px
    x[0, 4] = torch.rand(64, 96) * (xx > 60).float()  # object: soft values, right-hand part
    x[1, 4, 10:20, 5:45] = 1.0  # sample 2: object a rectangle, no hand at all
    got = mask_statistics(x)
    assert got.shape == (2, MASK_STATS_DIM) and torch.isfinite(got).all()
    for b in range(2):
        ref = _moments_reference(x[b, 3].numpy()) + _moments_reference(x[b, 4].numpy())
        torch.testing.assert_close(got[b], torch.tensor(ref, dtype=torch.float32), atol=1e-4, rtol=1e-4)
    # the disc: area pi r^2 / (H W), centre (30.5+0.5, 20.5+0.5) px -> [-1, 1], spread r / 2 (x: 2/W per px)
    log_area, cx, cy, sx, sy = got[0, :5].tolist()
    assert math.exp(log_area) == pytest.approx(math.pi * 81 / (64 * 96), rel=0.05)
    assert (cx, cy) == (pytest.approx(31 * 2 / 96 - 1, abs=1e-4), pytest.approx(21 * 2 / 64 - 1, abs=1e-4))
    assert sx == pytest.approx(4.5 * 2 / 96, rel=0.05) and sy == pytest.approx(4.5 * 2 / 64, rel=0.05)
    assert got[1, :5].tolist() == pytest.approx([math.log(1e-4), 0, 0, 0, 0], abs=1e-5)


def test_mask_stats_head_sees_sub_pixel_size_and_exports(tmp_path) -> None:
    """With mask_stats the output depends on the object's size below one pooled pixel; ONNX matches."""
    cfg = ModelConfig(128, 4, input_pool=2, mask_stats=True)
    net = PolicyNet(cfg)
    assert net.fc.in_features == 4 * 8 + 64
    with torch.no_grad():  # a head that reads only the stats, so the test is about them
        net.fc.weight.zero_()
        net.fc.weight[:, 4 * 8 :].normal_()
    net.eval()
    x = torch.rand(1, len(INPUT_CHANNELS), 128, 128)
    x[:, 3:] = 0.0
    x[0, 4, 40:80, 40:80] = 1.0
    y = x.clone()
    y[0, 4, 40:80, 80] = 1.0  # one 128 px column wider: under one 64 px pixel
    assert (net(x) - net(y)).abs().max() > 1e-4
    assert ModelConfig.from_dict(cfg.as_dict()) == cfg
    old = cfg.as_dict()
    old.pop("mask_stats")
    assert ModelConfig.from_dict(old).mask_stats is False
    ort = pytest.importorskip("onnxruntime")
    from policy.export import export_onnx

    path = tmp_path / "p.onnx"
    export_onnx(net, path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    batch = torch.cat([x, y, torch.rand(1, len(INPUT_CHANNELS), 128, 128)])
    a, s = sess.run(None, {"image": batch.numpy()})
    a_ref, s_ref = net.predict(batch)
    assert abs(a - a_ref.numpy()).max() <= 1e-4 and abs(s - s_ref.numpy()).max() <= 1e-4
