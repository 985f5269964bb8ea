"""The hand-eye RealSense (D435/D435i) colour stream as a `policy.robot.Camera` (pyrealsense2, import-guarded).

Frames are cropped and resized exactly as the training camera was (`trajgen.handeye`'s ``aspect``
crop: the largest centred region with the policy image's aspect ratio, then a resize), so the
intrinsics the policy saw in the splat hold on the robot. The frames carry no masks: pass a
`policy.robot.Segmenter` to the control loop. With ``depth=True`` they carry the depth stream aligned to
colour, in metres, cropped alike and resized by nearest neighbour (a policy with a depth channel).
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from policy.robot import Camera, Frame
from splatsim.conventions import PinholeIntrinsics

__all__ = ["RealSenseCamera", "crop_resize", "crop_resize_depth"]


def _centre_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The largest centred region of ``image`` with the aspect ratio of ``size`` (width, height)."""
    w, h = size
    H, W = image.shape[:2]
    aspect = w / h
    cw = min(float(W), H * aspect)
    ch = cw / aspect
    x0, y0 = int(round((W - cw) / 2)), int(round((H - ch) / 2))
    return image[y0 : y0 + int(round(ch)), x0 : x0 + int(round(cw))]


def crop_resize(rgb: np.ndarray, size: tuple[int, int]) -> np.ndarray:  # [H, W, 3] uint8 -> [h, w, 3] uint8
    """Largest centred crop with the aspect ratio of ``size`` (width, height), then an area resize."""
    w, h = size
    crop = _centre_crop(rgb, size)
    x = torch.from_numpy(np.ascontiguousarray(crop)).permute(2, 0, 1)[None].float()
    x = F.interpolate(x, size=(h, w), mode="area")
    return x[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()


def crop_resize_depth(depth: np.ndarray, size: tuple[int, int]) -> np.ndarray:  # [H, W] -> [h, w] float32
    """The same centred crop as `crop_resize`, then a nearest-neighbour resize (depth is never averaged
    across an object's edge); float metres in, float metres out."""
    w, h = size
    crop = _centre_crop(np.asarray(depth, np.float32), size)
    x = torch.from_numpy(np.ascontiguousarray(crop))[None, None]
    return F.interpolate(x, size=(h, w), mode="nearest")[0, 0].numpy()


class RealSenseCamera(Camera):
    """RealSense colour frames at the policy's size.

    Args:
        width, height: The policy image size.
        stream_width, stream_height, fps: The colour stream to open (640x480 at 30 fps like the paper's D435i).
        serial: A device serial number, or None for the first device.
        depth: Also stream depth, aligned to colour (``rs.align``), scaled to metres by the device's
            depth scale and cropped like the colour: for a policy with a depth channel.
        rs: The pyrealsense2 module (tests pass a fake); imported when None.
    """

    def __init__(
        self,
        width: int = 128,
        height: int = 128,
        *,
        stream_width: int = 640,
        stream_height: int = 480,
        fps: int = 30,
        serial: str | None = None,
        depth: bool = False,
        rs: Any = None,
    ) -> None:
        if rs is None:
            try:
                import pyrealsense2 as rs
            except ImportError as exc:
                raise ImportError(
                    "RealSenseCamera needs pyrealsense2: pip install 'splatsim[robot]' (or pip install pyrealsense2)"
                ) from exc
        self.rs = rs
        self.size = (int(width), int(height))
        self.pipeline = rs.pipeline()
        config = rs.config()
        if serial is not None:
            config.enable_device(serial)
        config.enable_stream(rs.stream.color, stream_width, stream_height, rs.format.rgb8, fps)
        self.depth = bool(depth)
        if self.depth:
            config.enable_stream(rs.stream.depth, stream_width, stream_height, rs.format.z16, fps)
        profile = self.pipeline.start(config)
        self.align = rs.align(rs.stream.color) if self.depth else None
        self.depth_scale = (
            float(profile.get_device().first_depth_sensor().get_depth_scale()) if self.depth else None
        )
        intr = profile.get_stream(rs.stream.color).as_video_stream_profile().get_intrinsics()
        # RealSense principal points are in integer-centre pixels; the project's are +0.5 (conventions).
        sensor = PinholeIntrinsics(intr.fx, intr.fy, intr.ppx + 0.5, intr.ppy + 0.5, intr.width, intr.height)
        aspect = width / height
        cw = min(float(sensor.width), sensor.height * aspect)
        ch = cw / aspect
        x0, y0 = round((sensor.width - cw) / 2), round((sensor.height - ch) / 2)
        s = width / round(cw)
        self.intrinsics = PinholeIntrinsics(
            sensor.fx * s, sensor.fy * s, (sensor.cx - x0) * s, (sensor.cy - y0) * s, int(width), int(height)
        )
        self.sensor_intrinsics = sensor

    def read(self) -> Frame:
        frames = self.pipeline.wait_for_frames()
        if self.align is not None:
            frames = self.align.process(frames)
        color = frames.get_color_frame()
        if not color:
            raise RuntimeError("RealSenseCamera: no colour frame")
        rgb = np.asanyarray(color.get_data())
        depth = None
        if self.depth:
            d = frames.get_depth_frame()
            if not d:
                raise RuntimeError("RealSenseCamera: no depth frame (depth=True)")
            raw = np.asanyarray(d.get_data())
            if raw.shape[:2] != rgb.shape[:2]:
                raise RuntimeError(
                    f"RealSenseCamera: aligned depth is {raw.shape[1]}x{raw.shape[0]}, colour "
                    f"{rgb.shape[1]}x{rgb.shape[0]}; expected the same size"
                )
            depth = crop_resize_depth(raw.astype(np.float32) * self.depth_scale, self.size)
        return Frame(crop_resize(rgb, self.size), None, time.monotonic(), depth)

    def close(self) -> None:
        try:
            self.pipeline.stop()
        except Exception:
            pass
