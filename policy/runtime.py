"""Policies as plain functions ``image [1, 5, H, W] float32 -> (action [6], score)``: torch and ONNX.

Both return the de-normalised action (radians, metres; `policy.checkpoint.ACTION_CONVENTION`) and
the pre-grasp score C in [0, 1]. `OnnxPolicy` needs only onnxruntime and the exported file (the
robot side); `TorchPolicy` wraps a `policy.model.PolicyNet`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policy.model import PolicyNet

__all__ = ["OnnxPolicy", "TorchPolicy"]


class TorchPolicy:
    """A `PolicyNet` in eval mode as a policy function."""

    def __init__(self, net: PolicyNet) -> None:
        self.net = net.eval()
        self.image_size = net.cfg.image_size
        self.input_channels = len(net.cfg.input_channels)

    @property
    def takes_depth(self) -> bool:
        return bool(self.net.cfg.depth)

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        x = torch.as_tensor(np.asarray(image, dtype=np.float32))
        action, score = self.net.predict(x)
        return action[0].double().numpy(), float(score[0])


class OnnxPolicy:
    """An exported policy (``policy.onnx``) run in onnxruntime on the CPU."""

    def __init__(self, path: str | Path, *, num_threads: int = 0) -> None:
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no exported policy; run `splatsim export` first")
        opts = ort.SessionOptions()
        if num_threads > 0:
            opts.intra_op_num_threads = num_threads
            opts.inter_op_num_threads = 1
        self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.path = path
        meta = self.session.get_modelmeta().custom_metadata_map
        self.metadata: dict[str, Any] = {k: _maybe_json(v) for k, v in meta.items()}
        inp = self.session.get_inputs()[0]
        self.input_name = inp.name
        self.image_size = int(inp.shape[-1]) if isinstance(inp.shape[-1], int) else None
        self.input_channels = int(inp.shape[1]) if isinstance(inp.shape[1], int) else None
        """5 (the paper's RGB + masks) or 6 (with the depth channel: set `policy.robot.ControlConfig.depth`)."""

    @property
    def takes_depth(self) -> bool:
        """Whether the model's input has the depth channel (`policy.model.ModelConfig.depth`)."""
        return self.input_channels == 6

    def __call__(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        x = np.ascontiguousarray(image, dtype=np.float32)
        if self.input_channels is not None and x.shape[-3] != self.input_channels:
            raise ValueError(
                f"{self.path}: input has {x.shape[-3]} channels; the model expects {self.input_channels}"
                + (" (RGB, masks and depth: ControlConfig.depth = True)" if self.takes_depth else "")
            )
        if self.image_size is not None and x.shape[-2:] != (self.image_size, self.image_size):
            raise ValueError(
                f"{self.path}: input is {x.shape[-1]}x{x.shape[-2]} px; the model expects "
                f"{self.image_size}x{self.image_size}"
            )
        action, score = self.session.run(["action", "score"], {self.input_name: x})
        return np.asarray(action[0], dtype=np.float64), float(score[0])


def _maybe_json(value: str) -> Any:
    """Metadata values are JSON (numbers, lists, objects) or plain strings."""
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        return value
