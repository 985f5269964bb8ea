"""`splatsim export`: the trained policy as ONNX with its metadata, checked in onnxruntime against torch.

Writes into ``cfg.out``::

    policy.onnx     input ``image`` [B, 5, S, S] float32 ([B, 6, S, S] for a policy with a depth channel) -> outputs ``action`` [B, 6], ``score`` [B]
                    (de-normalised action and sigmoid score: no statistics needed outside), with the
                    metadata below also in the model's ``metadata_props``
    metadata.json   input names, shapes, channel order, value ranges, the action normalisation (already
                    applied in the graph), tau_c, the action convention, the training intrinsics and
                    camera mount, and the parity check's result

The parity check runs the exported file in onnxruntime and the torch model on the same inputs (random
and structured 5-channel images, batch 1 and 3) and fails the export when the largest absolute
difference exceeds ``tolerance`` (1e-4).

Exporter: torch's current ``torch.onnx.export(..., dynamo=True)`` path when onnxscript is installed,
else the TorchScript-based path (``dynamo=False``), which needs nothing beyond torch and onnx. The
one used is recorded in the metadata.
"""

from __future__ import annotations

import importlib.util
import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from policy.checkpoint import load_policy
from policy.model import ExportWrapper, PolicyNet

__all__ = ["ExportConfig", "ExportResult", "check_parity", "export_onnx", "run_export"]

ONNX_FILE = "policy.onnx"
METADATA_JSON = "metadata.json"


@dataclass
class ExportConfig:
    """Export a trained policy to ONNX and check it in onnxruntime."""

    policy: Path = Path("runs/default/policy")
    """Policy folder (model.safetensors + config.json) written by `splatsim train`."""
    out: Path = Path("runs/default/export")
    """Folder for policy.onnx and metadata.json."""
    opset: int = 18
    """ONNX opset."""
    exporter: Literal["auto", "dynamo", "torchscript"] = "auto"
    """'auto': torch's dynamo exporter when onnxscript is installed, else the TorchScript one."""
    tolerance: float = 1e-4
    """Largest absolute difference allowed between onnxruntime and torch outputs."""
    check_samples: int = 8
    """Inputs the parity check runs."""
    tau_c: float | None = None
    """tau_c written into the metadata; None keeps the policy's (0.7 in the splat; 0.6 on the robot)."""
    seed: int = 0
    """Seeds the parity check's inputs."""


@dataclass
class ExportResult:
    onnx_path: Path
    metadata_path: Path
    max_abs_diff: float
    exporter: str
    metadata: dict[str, Any]


def _resolve_exporter(name: str) -> str:
    has_onnxscript = importlib.util.find_spec("onnxscript") is not None
    if name == "auto":
        return "dynamo" if has_onnxscript else "torchscript"
    if name == "dynamo" and not has_onnxscript:
        raise ValueError(
            "ExportConfig.exporter = 'dynamo' needs onnxscript (pip install onnxscript); use 'auto'"
        )
    if name not in ("dynamo", "torchscript"):
        raise ValueError(f"ExportConfig.exporter = {name!r}; expected 'auto', 'dynamo' or 'torchscript'")
    return name


def export_onnx(net: PolicyNet, path: Path, opset: int = 18, exporter: str = "auto") -> str:
    """Exports ``net`` (through `ExportWrapper`) to ``path`` with a dynamic batch axis; returns the exporter."""
    which = _resolve_exporter(exporter)
    wrapper = ExportWrapper(net).eval()
    S = net.cfg.image_size
    example = (torch.rand(1, len(net.cfg.input_channels), S, S),)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if which == "dynamo":
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                input_names=["image"],
                output_names=["action", "score"],
                dynamic_shapes={"image": {0: torch.export.Dim("batch", min=1, max=1024)}},
                opset_version=opset,
                dynamo=True,
                external_data=False,
            )
        else:
            torch.onnx.export(
                wrapper,
                example,
                str(path),
                input_names=["image"],
                output_names=["action", "score"],
                dynamic_axes={"image": {0: "batch"}, "action": {0: "batch"}, "score": {0: "batch"}},
                opset_version=min(opset, 18),
                dynamo=False,
            )
    return which


def _parity_inputs(S: int, n: int, seed: int, channels: int = 5) -> list[np.ndarray]:
    """Random and image-like inputs: uniform noise, and blobs of mask with the RGB (and the depth, with
    a sixth channel) inside them."""
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        B = 1 if i % 2 == 0 else 3
        if i % 4 < 2:
            x = rng.random((B, channels, S, S), dtype=np.float32)
        else:
            yy, xx = np.mgrid[0:S, 0:S] / S
            x = np.zeros((B, channels, S, S), np.float32)
            for b in range(B):
                cy, cx, r = rng.uniform(0.3, 0.7, 3) * np.array([1, 1, 0.4])
                obj = ((yy - cy) ** 2 + (xx - cx) ** 2 < r**2).astype(np.float32)
                hand = ((yy - cy - r) ** 2 + (xx - cx) ** 2 < (0.5 * r) ** 2).astype(np.float32) * (1 - obj)
                x[b, 3], x[b, 4] = hand, obj
                x[b, :3] = rng.random((3, 1, 1), dtype=np.float32) * (hand + obj)
                if channels > 5:  # depth: 0.3-0.6 m on the object, the hand a little nearer
                    x[b, 5] = (obj * rng.uniform(0.15, 0.3) + hand * rng.uniform(0.12, 0.28)).astype(
                        np.float32
                    )
        out.append(x)
    return out


def check_parity(net: PolicyNet, onnx_path: Path, samples: int = 8, seed: int = 0) -> float:
    """Largest absolute difference between onnxruntime and torch over the parity inputs."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    wrapper = ExportWrapper(net).eval()
    worst = 0.0
    for x in _parity_inputs(net.cfg.image_size, samples, seed, len(net.cfg.input_channels)):
        with torch.no_grad():
            a_t, s_t = wrapper(torch.from_numpy(x))
        a_o, s_o = sess.run(["action", "score"], {"image": x})
        worst = max(worst, float(np.abs(a_o - a_t.numpy()).max()), float(np.abs(s_o - s_t.numpy()).max()))
    return worst


def export_metadata(
    net: PolicyNet, meta: dict[str, Any], tau_c: float, exporter: str, opset: int
) -> dict[str, Any]:
    """The metadata document (metadata.json and the ONNX ``metadata_props``)."""
    S = net.cfg.image_size
    return {
        "format": "splatsim.policy.onnx",
        "version": 1,
        "inputs": [
            {
                "name": "image",
                "shape": ["batch", len(net.cfg.input_channels), S, S],
                "dtype": "float32",
                "layout": "NCHW",
                "channel_order": list(net.cfg.input_channels),
                "value_range": [0.0, 1.0],
                "preprocessing": meta.get("input", {}),
            }
        ],
        "outputs": [
            {"name": "action", "shape": ["batch", 6], "dtype": "float32", "units": meta["action"]["units"]},
            {"name": "score", "shape": ["batch"], "dtype": "float32", "value_range": [0.0, 1.0]},
        ],
        "normalisation": {
            "applied_in_graph": True,
            "action_mean": meta["action"]["mean"],
            "action_std": meta["action"]["std"],
            "rule": meta["action"]["normalisation"],
        },
        "tau_c": float(tau_c),
        "action_convention": meta["action"]["convention"],
        "training_intrinsics": {
            k: meta.get("camera", {}).get(k) for k in ("fx", "fy", "cx", "cy", "width", "height")
        },
        "camera": meta.get("camera", {}),
        "model": meta.get("model", {}),
        "exporter": exporter,
        "opset": opset,
        "torch_version": torch.__version__,
    }


def _add_onnx_metadata(path: Path, metadata: dict[str, Any]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for key, value in metadata.items():
        entry = model.metadata_props.add()
        entry.key = key
        entry.value = value if isinstance(value, str) else json.dumps(value)
    model.producer_name = "splatsim"
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def run_export(cfg: ExportConfig) -> ExportResult:
    """Exports ``cfg.policy`` to ``cfg.out`` and checks parity (module docstring).

    Raises:
        FileNotFoundError / ValueError: For a missing or malformed policy folder.
        RuntimeError: When onnxruntime and torch differ by more than ``cfg.tolerance``.
    """
    t0 = time.perf_counter()
    net, meta = load_policy(cfg.policy)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    onnx_path = out / ONNX_FILE
    exporter = export_onnx(net, onnx_path, cfg.opset, cfg.exporter)
    tau_c = float(meta.get("tau_c", 0.7) if cfg.tau_c is None else cfg.tau_c)
    metadata = export_metadata(net, meta, tau_c, exporter, cfg.opset)
    _add_onnx_metadata(onnx_path, metadata)
    diff = check_parity(net, onnx_path, cfg.check_samples, cfg.seed)
    metadata["parity"] = {
        "max_abs_diff": diff,
        "tolerance": cfg.tolerance,
        "samples": cfg.check_samples,
        "passed": diff <= cfg.tolerance,
        "export_s": time.perf_counter() - t0,
    }
    metadata_path = out / METADATA_JSON
    metadata_path.write_text(json.dumps(metadata, indent=2))
    if not diff <= cfg.tolerance:
        raise RuntimeError(
            f"{onnx_path}: onnxruntime differs from torch by {diff:.3g} > tolerance {cfg.tolerance}; "
            "the export is not faithful (try another opset or exporter)"
        )
    return ExportResult(onnx_path, metadata_path, diff, exporter, metadata)
