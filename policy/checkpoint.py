"""The trained policy on disk: ``model.safetensors`` + ``config.json``, readable without this package.

``model.safetensors`` holds the network's parameters and buffers, including ``action_mean`` and
``action_std`` (the dataset statistics the outputs are de-normalised with). ``config.json``::

    {"format": "splatsim.policy", "version": 1,
     "model": {"image_size": 128, "width": 64, "blocks": [2, 2, 2, 2]},
     "input": {"name": "image", "shape": [1, 5, S, S], "channels": [...], "range": [0, 1], ...},
     "action": {"convention": ..., "mean": [6], "std": [6], "units": [...]},
     "tau_c": 0.7,
     "camera": {"fx", "fy", "cx", "cy", "width", "height", "gripper_T_camera", ...},
     "training": {... the TrainConfig, scenes, episodes, history ...}}
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from policy.data import DEPTH_RANGE_M
from policy.model import ACTION_DIM, ModelConfig, PolicyNet
from splatsim.scene import LABEL_BACKGROUND, LABEL_HAND, LABEL_OBJECT

__all__ = [
    "ACTION_CONVENTION",
    "CONFIG_JSON",
    "FORMAT_NAME",
    "MODEL_FILE",
    "load_policy",
    "policy_metadata",
    "save_policy",
]

FORMAT_NAME = "splatsim.policy"
FORMAT_VERSION = 1
MODEL_FILE = "model.safetensors"
CONFIG_JSON = "config.json"
ACTION_CONVENTION = (
    "relative gripper motion rel = inv(T_cur) @ T_next, T_next = T_cur @ rel, expressed in the current "
    "gripper frame (OpenCV camera axes: x right, y down, z forward = approach); 6 numbers: extrinsic xyz "
    "Euler angles of rel's rotation, R = Rz(c) Ry(b) Rx(a), radians, then rel's translation, metres"
)
ACTION_UNITS = ("rad", "rad", "rad", "m", "m", "m")


def policy_metadata(
    net: PolicyNet,
    camera: dict[str, Any],
    tau_c: float,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The ``config.json`` document for ``net`` (see the module docstring)."""
    size = net.cfg.image_size
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "model": net.cfg.as_dict(),
        "input": {
            "name": "image",
            "shape": [1, len(net.cfg.input_channels), size, size],
            "layout": "NCHW",
            "dtype": "float32",
            "channels": list(net.cfg.input_channels),
            "range": [0.0, 1.0],
            "rgb": "sRGB / 255, background removed (0 wherever both masks are 0)",
            "masks": "1.0 where the pixel's label is hand (channel 3) / object (channel 4), else 0.0",
            "mask_labels": {"background": LABEL_BACKGROUND, "object": LABEL_OBJECT, "hand": LABEL_HAND},
            **(
                {
                    "depth": f"channel 5: depth aligned to colour along the camera z axis, metres clamped to "
                    f"[0, {DEPTH_RANGE_M}] and divided by {DEPTH_RANGE_M}, 0 where there is no depth and "
                    "wherever both masks are 0"
                }
                if net.cfg.depth
                else {}
            ),
        },
        "outputs": {
            "action": {"shape": ["B", ACTION_DIM], "units": list(ACTION_UNITS), "normalised": False},
            "score": {"shape": ["B"], "range": [0.0, 1.0], "meaning": "pre-grasp score C (Eq. 15-16)"},
        },
        "action": {
            "convention": ACTION_CONVENTION,
            "units": list(ACTION_UNITS),
            "mean": [float(v) for v in net.action_mean],
            "std": [float(v) for v in net.action_std],
            "normalisation": "network output o: action = mean + std * o (done inside the model)",
        },
        "tau_c": float(tau_c),
        "camera": camera,
        "training": training or {},
    }


def _atomic_write(path: Path, write) -> None:
    tmp = path.with_name(path.name + ".tmp")
    write(tmp)
    os.replace(tmp, path)


def save_policy(out_dir: str | Path, net: PolicyNet, meta: dict[str, Any]) -> tuple[Path, Path]:
    """Writes ``model.safetensors`` and ``config.json`` (atomically, each) into ``out_dir``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    model_path, config_path = out_dir / MODEL_FILE, out_dir / CONFIG_JSON
    _atomic_write(model_path, lambda p: save_file(state, str(p), metadata={"format": FORMAT_NAME}))
    _atomic_write(config_path, lambda p: p.write_text(json.dumps(meta, indent=2)))
    return model_path, config_path


def load_policy(path: str | Path) -> tuple[PolicyNet, dict[str, Any]]:
    """Reads a policy folder (or its ``config.json`` / ``model.safetensors``); returns the net in eval mode.

    Raises:
        FileNotFoundError: If the folder lacks either file.
        ValueError: Naming the file, for another format or weights that do not fit the config.
    """
    path = Path(path)
    folder = path.parent if path.is_file() else path
    config_path, model_path = folder / CONFIG_JSON, folder / MODEL_FILE
    for p in (config_path, model_path):
        if not p.is_file():
            raise FileNotFoundError(f"{p}: missing; expected a policy folder written by `splatsim train`")
    try:
        meta = json.loads(config_path.read_text())
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path}: not valid JSON ({exc})") from exc
    if meta.get("format") != FORMAT_NAME:
        raise ValueError(f"{config_path}: format {meta.get('format')!r}; expected {FORMAT_NAME!r}")
    net = PolicyNet(ModelConfig.from_dict(meta["model"]))
    state = load_file(str(model_path))
    expected = net.state_dict()
    wrong = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    if wrong or missing or unexpected:  # e.g. the weights of a run with another ModelConfig
        problems = []
        if wrong:
            k = wrong[0]
            problems.append(
                f"{len(wrong)} tensors have other shapes (first: {k} is {list(state[k].shape)}, the model "
                f"expects {list(expected[k].shape)})"
            )
        if missing:
            problems.append(f"{len(missing)} tensors are missing (first: {missing[0]})")
        if unexpected:
            problems.append(f"{len(unexpected)} tensors are unexpected (first: {unexpected[0]})")
        raise ValueError(
            f"{model_path}: weights do not match {config_path}'s model {meta['model']}: {'; '.join(problems)}. "
            "Expected the model.safetensors written together with this config.json by one `splatsim train`"
        )
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise ValueError(f"{model_path}: weights do not match {config_path}'s model ({exc})") from exc
    net.eval()
    return net, meta


def state_to_cpu(obj: Any) -> Any:
    """Optimizer states and the like with every tensor on the CPU (for torch.save)."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        return {k: state_to_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(state_to_cpu(v) for v in obj)
    return obj
