"""Tests for policy.export and policy.runtime: ONNX parity with torch, metadata."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

from policy.checkpoint import load_policy
from policy.export import check_parity
from policy.runtime import OnnxPolicy, TorchPolicy


def test_export_parity_and_metadata(exported_policy, trained_policy) -> None:
    meta = json.loads((exported_policy / "metadata.json").read_text())
    assert meta["parity"]["passed"] and meta["parity"]["max_abs_diff"] <= 1e-4
    assert meta["inputs"][0]["name"] == "image"
    assert meta["inputs"][0]["channel_order"] == ["red", "green", "blue", "hand_mask", "object_mask"]
    assert meta["inputs"][0]["value_range"] == [0.0, 1.0]
    assert meta["tau_c"] == 0.7
    assert "inv(T_cur) @ T_next" in meta["action_convention"]
    assert meta["training_intrinsics"]["width"] == 32 and meta["training_intrinsics"]["fx"] > 0
    assert len(meta["normalisation"]["action_std"]) == 6
    model = onnx.load(str(exported_policy / "policy.onnx"))
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["tau_c"]) == 0.7
    net, _ = load_policy(trained_policy)
    assert check_parity(net, exported_policy / "policy.onnx", samples=2, seed=5) <= 1e-4


def test_onnx_and_torch_policies_agree(exported_policy, trained_policy) -> None:
    net, _ = load_policy(trained_policy)
    onnx_fn = OnnxPolicy(exported_policy / "policy.onnx")
    torch_fn = TorchPolicy(net)
    x = np.random.default_rng(0).random((1, 5, 32, 32), dtype=np.float32)
    a1, s1 = onnx_fn(x)
    a2, s2 = torch_fn(x)
    assert np.abs(a1 - a2).max() <= 1e-4 and abs(s1 - s2) <= 1e-4
    assert onnx_fn.metadata["tau_c"] == 0.7
    with pytest.raises(ValueError, match="expects 32x32"):
        onnx_fn(np.zeros((1, 5, 16, 16), np.float32))
