"""Tests for policy.train and policy.checkpoint: files, reload, exact resume, config errors."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from policy_test_helpers import SIZE
from safetensors.torch import load_file

from policy.checkpoint import load_policy
from policy.model import ModelConfig, PolicyNet
from policy.train import TrainConfig, run_train


def _cfg(demo_dir, out, **kw) -> TrainConfig:
    base = dict(data=(demo_dir,), out=out, model=ModelConfig(SIZE, 4), epochs=2, batch_size=4, progress=False)
    base.update(kw)
    return TrainConfig(**base)


def test_checkpoint_files_and_reload(trained_policy) -> None:
    for name in (
        "model.safetensors",
        "config.json",
        "train_state.pt",
        "train_log.json",
        "training_curve.png",
    ):
        assert (trained_policy / name).is_file(), name
    net, meta = load_policy(trained_policy)
    assert meta["format"] == "splatsim.policy" and meta["tau_c"] == 0.7
    assert meta["input"]["channels"] == ["red", "green", "blue", "hand_mask", "object_mask"]
    assert meta["camera"]["width"] == SIZE
    assert meta["training"]["steps"] == 3
    # the dataset statistics travel with the weights
    state = load_file(str(trained_policy / "model.safetensors"))
    torch.testing.assert_close(state["action_std"], torch.tensor(meta["action"]["std"]))
    assert not torch.allclose(state["action_std"], torch.ones(6))
    # the split is recorded, episode-level, without overlap
    tr = meta["training"]
    assert tr["train_episodes"] and tr["val_episodes"]
    assert not set(tr["train_episodes"]) & set(tr["val_episodes"])


def test_resume_is_exact(tmp_path, demo_dir) -> None:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full = run_train(_cfg(demo_dir, tmp_path / "full", max_steps=4))
        first = run_train(_cfg(demo_dir, tmp_path / "split", max_steps=2))
        assert first.steps == 2
        # a kill between writing model.safetensors and train_state.pt leaves weights one save ahead of
        # the optimizer state: the resume must take the weights stored with that state
        shutil.copy(tmp_path / "full" / "model.safetensors", tmp_path / "split" / "model.safetensors")
        second = run_train(_cfg(demo_dir, tmp_path / "split", max_steps=4))
    finally:
        torch.set_num_threads(threads)
    assert second.resumed_from_step == 2 and second.steps == 4 and full.steps == 4
    a = load_file(str(tmp_path / "full" / "model.safetensors"))
    b = load_file(str(tmp_path / "split" / "model.safetensors"))
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=0, atol=1e-6, msg=k)


def test_resume_refuses_other_config(tmp_path, demo_dir) -> None:
    run_train(_cfg(demo_dir, tmp_path, max_steps=1))
    r = run_train(_cfg(demo_dir, tmp_path, max_steps=1, lr=3e-4))
    assert r.resumed_from_step is None


def test_history_and_log(tmp_path, demo_dir) -> None:
    r = run_train(_cfg(demo_dir, tmp_path, epochs=1))
    assert r.epochs_done == 1 and len(r.history) == 1
    h = r.history[0]
    for key in ("train_loss", "val_loss", "val_L_T", "val_L_R", "val_L_C", "val_rot_mae_deg"):
        assert key in h
    log = json.loads((tmp_path / "train_log.json").read_text())
    assert log["history"][0]["epoch"] == 1
    assert r.curve_png is not None and r.curve_png.stat().st_size > 0


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("epochs", 0, "epochs"),
        ("batch_size", 1, "batch_size"),
        ("val_fraction", 1.0, "val_fraction"),
        ("lr", 0.0, "lr"),
    ],
)
def test_bad_config(tmp_path, demo_dir, field, value, match) -> None:
    with pytest.raises(ValueError, match=match):
        run_train(_cfg(demo_dir, tmp_path, **{field: value}))


def test_missing_data(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="splatsim demos"):
        run_train(_cfg(tmp_path / "nope", tmp_path / "out"))


def test_init_from_keeps_the_statistics(tmp_path, demo_dir, trained_policy) -> None:
    init, _ = load_policy(trained_policy)
    r = run_train(_cfg(demo_dir, tmp_path, max_steps=1, init_from=trained_policy, val_fraction=0.5))
    net, meta = load_policy(r.out_dir)
    torch.testing.assert_close(net.action_mean, init.action_mean)
    torch.testing.assert_close(net.action_std, init.action_std)
    with pytest.raises(ValueError, match="init_from"):
        run_train(
            _cfg(demo_dir, tmp_path / "b", max_steps=1, init_from=trained_policy, model=ModelConfig(SIZE, 8))
        )


def test_device_auto_and_cpu_train_the_same_weights_here_and_cuda_without_a_gpu_says_so(tmp_path, demo_dir):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a = run_train(_cfg(demo_dir, tmp_path / "cpu", max_steps=2, device="cpu"))
        b = run_train(_cfg(demo_dir, tmp_path / "auto", max_steps=2, device="auto"))
    finally:
        torch.set_num_threads(threads)
    assert a.steps == b.steps == 2
    wa = load_file(str(tmp_path / "cpu" / "model.safetensors"))
    wb = load_file(str(tmp_path / "auto" / "model.safetensors"))
    if not torch.cuda.is_available():  # auto = cpu here: bit for bit the same run
        for k in wa:
            torch.testing.assert_close(wa[k], wb[k], rtol=0, atol=0, msg=k)
        with pytest.raises(ValueError, match="torch sees no CUDA device"):
            run_train(_cfg(demo_dir, tmp_path / "cuda", device="cuda"))
        assert not (tmp_path / "cuda").exists()  # refused before anything is written
    # the device does not enter the configuration hash: a run resumes on another device
    assert (
        json.loads((tmp_path / "cpu" / "config.json").read_text())["training"]["config_hash"]
        == json.loads((tmp_path / "auto" / "config.json").read_text())["training"]["config_hash"]
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_training_matches_cpu_and_resumes_on_the_cpu(tmp_path, demo_dir) -> None:
    """The same run on the GPU and the CPU (TF32 off: float32 both sides) has the same losses step by step
    and ends within Adam's step bound of the same weights; the checkpoint written on the GPU reloads on
    the CPU and gives the GPU's outputs; a run started on the GPU resumes on the CPU (same losses)."""
    tf32 = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    losses: dict[str, list[float]] = {"cpu": [], "cuda": [], "mixed": []}

    def rec(name):
        return lambda step, parts: losses[name].append(parts["loss"])

    try:
        a = run_train(_cfg(demo_dir, tmp_path / "cpu", max_steps=4, device="cpu"), callback=rec("cpu"))
        b = run_train(_cfg(demo_dir, tmp_path / "cuda", max_steps=4, device="cuda"), callback=rec("cuda"))
        half = run_train(
            _cfg(demo_dir, tmp_path / "mixed", max_steps=2, device="cuda"), callback=rec("mixed")
        )
        resumed = run_train(
            _cfg(demo_dir, tmp_path / "mixed", max_steps=4, device="cpu"), callback=rec("mixed")
        )
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = tf32
    assert a.steps == b.steps == resumed.steps == 4 and half.steps == 2
    for other in ("cuda", "mixed"):
        assert len(losses[other]) == 4
        torch.testing.assert_close(
            torch.tensor(losses[other]), torch.tensor(losses["cpu"]), rtol=1e-3, atol=1e-5
        )
    # Adam moves a parameter by at most about lr per step whatever the gradient's size, so where rounding
    # decides the gradient's sign (this tiny net's batch norm over 4 samples amplifies it) the two devices
    # can step opposite ways: 2 lr apart per step, at most.
    lr = _cfg(demo_dir, tmp_path).lr
    params = {n for n, _ in PolicyNet(ModelConfig(SIZE, 4)).named_parameters()}
    wa = load_file(str(tmp_path / "cpu" / "model.safetensors"))
    for other in ("cuda", "mixed"):
        wb = load_file(str(tmp_path / other / "model.safetensors"))  # tensors come back on the CPU
        assert wb.keys() == wa.keys() and params <= wa.keys()
        for k in wa:
            assert wb[k].device.type == "cpu"
            if k in params:
                d = (wb[k].double() - wa[k].double()).abs().flatten()
                assert float(d.max()) <= 2 * 4 * lr * 1.05, f"{other}: {k} differs by {float(d.max()):.3g}"
    net, _ = load_policy(tmp_path / "cuda")
    x = torch.rand(2, 5, SIZE, SIZE)
    with torch.no_grad():
        y_cpu = net.eval()(x)
        y_gpu = net.cuda()(x.cuda()).cpu()
    torch.testing.assert_close(y_gpu, y_cpu, rtol=1e-4, atol=1e-4)


def test_geometry_head_learns_from_the_demonstrations_poses_and_is_left_out_of_the_export(tmp_path, demo_dir):
    from policy.data import column_stats, load_demos, make_policy_input, stack_geometry
    from policy.export import ExportConfig, run_export
    from policy.model import ExportWrapper

    cfg = _cfg(
        demo_dir,
        tmp_path / "geo",
        epochs=25,
        lr=3e-3,
        lambda_t=0.0,
        lambda_r=0.0,
        lambda_c=0.0,
        lambda_geometry=1.0,
        val_fraction=0.0,
    )
    r = run_train(cfg)
    net, meta = load_policy(r.out_dir)
    assert net.cfg.geometry_head and meta["model"]["geometry_head"] is True
    # its normalisation is the training frames' statistics, stored with the weights
    demos = load_demos([demo_dir])
    target = stack_geometry(demos.episodes)
    mean, std = column_stats(target)
    torch.testing.assert_close(net.geometry_mean, mean)
    torch.testing.assert_close(net.geometry_std, std)
    # the head learns: its error on the frames falls far below the untrained head's (which says the mean)
    x = torch.stack([make_policy_input(f, m) for e in demos.episodes for f, m in zip(e.rgb, e.mask)])
    untrained = PolicyNet(net.cfg)
    untrained.set_action_stats(net.action_mean, net.action_std)
    untrained.set_geometry_stats(mean, std)
    err = ((net.predict_geometry(x) - target) / std).pow(2).mean()
    err0 = ((untrained.predict_geometry(x) - target) / std).pow(2).mean()
    assert err0 > 0.1 and err < 0.25 * err0, (float(err), float(err0))
    x = torch.rand(3, 5, SIZE, SIZE)
    assert net.predict_geometry(x).shape == (3, 7)
    # the policy's outputs are unchanged by the head: predict, the export wrapper and ONNX give action and score
    a, c = net.predict(x)
    net.eval()
    ea, ec = ExportWrapper(net)(x)
    torch.testing.assert_close(a, ea)
    torch.testing.assert_close(c, ec)
    ex = run_export(ExportConfig(policy=r.out_dir, out=tmp_path / "export", check_samples=4))
    assert ex.max_abs_diff <= 1e-4
    # validation reports the head's error in millimetres
    v = run_train(_cfg(demo_dir, tmp_path / "val", epochs=1, lambda_geometry=1.0))
    assert {"val_L_G", "val_distance_mae_mm"} <= set(v.history[0])
    # without the head nothing of it appears
    assert "val_L_G" not in run_train(_cfg(demo_dir, tmp_path / "plain", epochs=1)).history[0]


def test_geometry_head_needs_poses_and_a_matching_init(tmp_path, demo_dir, trained_policy) -> None:
    from policy.data import load_demos

    demos = load_demos([demo_dir])
    for e in demos.episodes:
        e.geometry = None  # shards from before poses were stored
    with pytest.raises(ValueError, match="lambda_geometry = 1.0: the training episodes record no poses"):
        run_train(_cfg(demo_dir, tmp_path / "a", lambda_geometry=1.0), demos=demos)
    with pytest.raises(ValueError, match="geometry head"):
        run_train(_cfg(demo_dir, tmp_path / "b", max_steps=1, init_from=trained_policy, lambda_geometry=1.0))
    with pytest.raises(ValueError, match="lambda_geometry"):
        run_train(_cfg(demo_dir, tmp_path / "c", lambda_geometry=-1.0))
    with pytest.raises(ValueError, match="the head follows lambda_geometry"):
        run_train(_cfg(demo_dir, tmp_path / "d", model=ModelConfig(SIZE, 4, geometry_head=True)))


def test_decoupled_weight_decay_shrinks_the_weights_apart_from_the_adam_step(tmp_path, demo_dir) -> None:
    """AdamW's first step: the same Adam step as without decay, minus lr * weight_decay * the initial
    weights; Adam's coupled L2 term changes the step itself."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    lr = 1e-3
    try:
        runs = {
            name: load_file(
                str(
                    run_train(_cfg(demo_dir, tmp_path / name, max_steps=1, lr=lr, **kw)).out_dir
                    / "model.safetensors"
                )
            )
            for name, kw in {
                "plain": {},
                "w1": {"weight_decay": 1.0, "decoupled_weight_decay": True},
                "w3": {"weight_decay": 3.0, "decoupled_weight_decay": True},
                "l2": {"weight_decay": 1.0},
            }.items()
        }
    finally:
        torch.set_num_threads(threads)
    torch.manual_seed(0)  # run_train's initial weights: seed 0, then the network
    p0 = PolicyNet(ModelConfig(SIZE, 4)).state_dict()
    for key in ("conv1.weight", "fc.weight", "layer4.1.conv2.weight"):
        d1 = runs["w1"][key] - runs["plain"][key]
        assert d1.abs().max() > 1e-7, key
        torch.testing.assert_close(d1, -lr * 1.0 * p0[key], atol=1e-8, rtol=1e-4)
        torch.testing.assert_close(
            runs["w3"][key] - runs["plain"][key], -lr * 3.0 * p0[key], atol=1e-8, rtol=1e-4
        )
    assert (runs["l2"]["conv1.weight"] - runs["w1"]["conv1.weight"]).abs().max() > 1e-6
