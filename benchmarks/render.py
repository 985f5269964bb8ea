"""Render benchmark: the compiled numba CPU rasterizer against the vectorised pure-torch tile compositor.

    python benchmarks/render.py [--json] [--quick] [--repeats R]

What it measures, for a random scene and the compact object-like scene (`splatsim.scene`), at 160×120,
320×240 and 640×480 with 5k, 50k and 200k Gaussians (``--quick``: 320×240 with 5k and 50k only):

- Milliseconds and frames per second of ``rasterize(...)`` end to end (input checks, projection,
  binning, compositing), forward under ``torch.no_grad()`` and forward+backward (a scalar loss over
  rgb, depth and alpha, backpropagated to means, quats, scales, opacities and colours). Each config is
  warmed up once; the figure is the median of the repeats. Where the torch backend runs too, the two
  are timed interleaved (cpu, torch, cpu, torch, ...) so that load from other processes hits both
  alike, and the speedup is the ratio of those medians; the cpu figure in the tables is a further block
  of cpu-only calls (a call right after a multi-second torch call runs slower, which is not the cpu
  backend's own cost; the interleaved samples are kept in the JSON).
- The torch backend only on a subset (it is slow, and its backward keeps every chunk's [tiles × 64 ×
  256] intermediates for autograd): 320×240 with 5k and 50k for both scenes always (forward; the
  forward+backward where its memory estimate fits under ``--torch-mem-gb``), and 160×120 when the
  ``--torch-budget`` allows. The budget bounds the torch time: it lowers the torch repeats (down to
  one sample; a warm-up call that takes over 2 s is then counted as that sample) and drops optional
  configs. Elsewhere the tables print "—".
- Peak memory: how far the process's resident set rose above its level just before the config's
  first (warm-up) call: freed heap is returned to the OS (``malloc_trim``), the kernel's peak-RSS
  mark is reset (``/proc/self/clear_refs``), then VmHWM − VmRSS is read after the call. It counts
  everything the call allocates (projection, autograd graph, numba buffers, outputs), not the scene
  itself or the compiled code.
- Numba compile time, in child processes: one with a fresh empty ``NUMBA_CACHE_DIR`` (cold compile of
  binning, forward and backward = first forward+backward call minus a warm one), then one reusing that
  now-populated cache (what every later process pays on its first call).
- Tile intersections (Gaussian × 16×16 tile pairs) per config.

Camera: at the origin looking down +z (OpenCV axes), fx = fy = 0.9·W, principal point at the image
centre, so every resolution has the same horizontal field of view (2·atan(1/1.8) ≈ 58°) and K scales
with the image. The random scene is generated once per size for the 320×240 focal length (on-screen
sigmas of 1–8 px there, twice that at 640×480); the object-like scene is centred 0.6 m in front.

With ``--json`` the last line printed is one JSON object (headline numbers, the goals, and every
measured row under ``results``).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from rich.console import Console
from rich.table import Table

from splatsim.render import cpu_kernels, rasterize
from splatsim.render.projection import project_gaussians, screen_extents
from splatsim.scene import GaussianScene, object_like_scene, random_scene

RESOLUTIONS = ((160, 120), (320, 240), (640, 480))
COUNTS = (5_000, 50_000, 200_000)
SCENES = ("random", "object")
QUICK_RESOLUTIONS = ((320, 240),)
QUICK_COUNTS = (5_000, 50_000)
FOCAL_FRACTION = 0.9  # fx = fy = 0.9·W at every resolution
REF_WIDTH = 320  # the random scene's Gaussian sizes are drawn for this resolution's focal length
SEED = 0

# The torch baseline runs on these; the required ones always (budget permitting only fewer repeats).
TORCH_REQUIRED_RES = ((320, 240),)
TORCH_OPTIONAL_RES = ((160, 120),)
TORCH_COUNTS = (5_000, 50_000)
TORCH_CHUNK = 64  # composite_torch_tiles' default chunk
TORCH_BWD_BYTES_PER_ELEM = 64.0  # measured peak ≈ 58–59 B per [tile, chunk, pixel] element (5k, 320×240)
TORCH_INIT_NS_PER_ELEM = {"fwd": 100.0, "fwdbwd": 250.0}  # first guesses, recalibrated as it runs
COUNTS_WARMUP_AS_SAMPLE_S = 2.0

GOAL_FWD_MS = 60.0
GOAL_FWDBWD_MS = 250.0
GOAL_SPEEDUP_FWD = 20.0

MODES = ("fwd", "fwdbwd")
MODE_NAMES = {"fwd": "forward", "fwdbwd": "forward+backward"}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------
# Cameras and scenes


def intrinsics(width: int, height: int) -> torch.Tensor:
    f = FOCAL_FRACTION * width
    return torch.tensor([[f, 0.0, width / 2.0], [0.0, f, height / 2.0], [0.0, 0.0, 1.0]])[None]


def hfov_deg() -> float:
    return math.degrees(2.0 * math.atan(0.5 / FOCAL_FRACTION))


def make_scene(kind: str, num: int) -> GaussianScene:
    if kind == "random":
        return random_scene(num, SEED, focal_px=FOCAL_FRACTION * REF_WIDTH)
    return object_like_scene(num, SEED)


@dataclass
class Inputs:
    """Leaf tensors for one scene, camera and loss weights for one resolution."""

    means: torch.Tensor
    quats: torch.Tensor
    scales: torch.Tensor
    opacities: torch.Tensor
    colors: torch.Tensor
    labels: torch.Tensor
    viewmats: torch.Tensor
    Ks: torch.Tensor
    width: int
    height: int
    w_rgb: torch.Tensor
    w_depth: torch.Tensor
    w_alpha: torch.Tensor

    @property
    def leaves(self) -> tuple[torch.Tensor, ...]:
        return (self.means, self.quats, self.scales, self.opacities, self.colors)


def make_inputs(scene: GaussianScene, width: int, height: int) -> Inputs:
    def leaf(t: torch.Tensor) -> torch.Tensor:
        return t.detach().clone().contiguous().requires_grad_(True)

    g = torch.Generator().manual_seed(1234)
    return Inputs(
        means=leaf(scene.means),
        quats=leaf(scene.quats),
        scales=leaf(scene.scales),
        opacities=leaf(scene.opacities),
        colors=leaf(scene.colors),
        labels=scene.labels.clone(),
        viewmats=torch.eye(4)[None],
        Ks=intrinsics(width, height),
        width=width,
        height=height,
        w_rgb=torch.rand(1, height, width, 3, generator=g),
        w_depth=0.1 * torch.rand(1, height, width, generator=g),
        w_alpha=torch.rand(1, height, width, generator=g),
    )


def render_once(inp: Inputs, backend: str):
    return rasterize(
        *inp.leaves, inp.viewmats, inp.Ks, inp.width, inp.height, labels=inp.labels, backend=backend
    )


def run_fwd(inp: Inputs, backend: str):
    with torch.no_grad():
        return render_once(inp, backend)


def run_fwdbwd(inp: Inputs, backend: str):
    out = render_once(inp, backend)
    loss = (out.rgb * inp.w_rgb).sum() + (out.depth * inp.w_depth).sum() + (out.alpha * inp.w_alpha).sum()
    loss.backward()
    return loss


RUNNERS = {"fwd": run_fwd, "fwdbwd": run_fwdbwd}


def clear_grads(inp: Inputs) -> None:
    for t in inp.leaves:
        t.grad = None


@dataclass
class Counters:
    isect: int  # Gaussian × tile pairs
    max_per_tile: int
    visible: int  # Gaussians that touch at least one pixel
    tiles: int

    @property
    def torch_work(self) -> int:
        """Elements of the torch compositor's [tiles, chunk, 256] chunk tensors over the whole loop."""
        chunks = math.ceil(self.max_per_tile / TORCH_CHUNK)
        return self.tiles * chunks * TORCH_CHUNK * cpu_kernels.TILE_PIX


def count_intersections(inp: Inputs) -> Counters:
    with torch.no_grad():
        proj = project_gaussians(
            inp.means, inp.quats, inp.scales, inp.viewmats, inp.Ks, inp.width, inp.height, 0.3, 0.01, 1e10
        )
        ext = screen_extents(proj.cov2d, inp.opacities[None])
    arrays = [np.ascontiguousarray(t.numpy()) for t in (proj.means2d, ext, proj.depths)]
    offsets, ids = cpu_kernels.bin_gaussians(*arrays, proj.valid.numpy(), inp.width, inp.height)
    per_tile = np.diff(offsets)
    return Counters(
        isect=int(ids.shape[0]),
        max_per_tile=int(per_tile.max()) if per_tile.size else 0,
        visible=int(np.unique(ids).size),
        tiles=int(per_tile.size),
    )


# --------------------------------------------------------------------------------------------------
# Peak memory of one call


class PeakRSS:
    """Peak resident-set increase of this process over one call (see the module docstring)."""

    def __init__(self) -> None:
        self.method = "none"
        try:
            self._libc = ctypes.CDLL("libc.so.6")
            self._libc.malloc_trim(0)
        except (OSError, AttributeError):
            self._libc = None
        try:
            self._reset()
            self._status()
            self.method = "clear_refs"
        except OSError:
            self.method = "none"

    @staticmethod
    def _reset() -> None:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")

    @staticmethod
    def _status() -> dict[str, float]:
        out = {}
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:")):
                    out[line.split(":")[0]] = int(line.split()[1]) / 1024.0
        return out

    def measure(self, fn):
        """Run fn(); return (seconds, peak RSS increase in MiB or None, fn's result)."""
        if self.method == "none":
            t0 = time.perf_counter()
            res = fn()
            return time.perf_counter() - t0, None, res
        if self._libc is not None:
            self._libc.malloc_trim(0)
        self._reset()
        before = self._status()["VmRSS"]
        t0 = time.perf_counter()
        res = fn()
        dt = time.perf_counter() - t0
        return dt, max(0.0, self._status()["VmHWM"] - before), res


# --------------------------------------------------------------------------------------------------
# Numba compile time (child processes)


def compile_child() -> None:
    """Child: time the first forward and backward calls against warm ones; print one JSON line."""
    startup_s = _seconds_since_process_start()  # interpreter start + imports (torch, numba, splatsim)
    inp = make_inputs(make_scene("random", 5_000), 320, 240)

    def once() -> tuple[float, float]:
        clear_grads(inp)
        a = time.perf_counter()
        out = render_once(inp, "cpu")
        loss = (out.rgb * inp.w_rgb).sum() + (out.depth * inp.w_depth).sum() + (out.alpha * inp.w_alpha).sum()
        b = time.perf_counter()
        loss.backward()
        return b - a, time.perf_counter() - b

    first = once()
    warm = [once() for _ in range(3)]
    warm_f = min(w[0] for w in warm)
    warm_b = min(w[1] for w in warm)
    print(
        json.dumps(
            {
                "startup_and_import_s": startup_s,
                "first_fwd_s": first[0],
                "first_bwd_s": first[1],
                "warm_fwd_s": warm_f,
                "warm_bwd_s": warm_b,
                "first_call_s": first[0] + first[1],
                "overhead_s": (first[0] - warm_f) + (first[1] - warm_b),
            }
        ),
        flush=True,
    )


def _seconds_since_process_start() -> float | None:
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def measure_compile() -> dict:
    cache = tempfile.mkdtemp(prefix="splatsim-bench-numba-cache-")
    out: dict = {"cache_dir": "fresh temporary directory (removed afterwards)"}
    try:
        for label in ("cold", "warm_cache"):
            env = dict(os.environ, NUMBA_CACHE_DIR=cache)
            log(f"[compile] child process, {label} numba cache ...")
            t0 = time.perf_counter()
            proc = subprocess.run(
                [sys.executable, os.path.abspath(__file__), "--_compile-child"],
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                out[label] = {"error": proc.stderr.strip().splitlines()[-1:] or ["failed"]}
                continue
            res = json.loads(proc.stdout.strip().splitlines()[-1])
            res["process_wall_s"] = wall
            out[label] = res
    finally:
        shutil.rmtree(cache, ignore_errors=True)
    return out


# --------------------------------------------------------------------------------------------------
# Measurement


@dataclass
class Row:
    scene: str
    width: int
    height: int
    n: int
    backend: str
    mode: str
    samples_ms: list[float] = field(default_factory=list)
    warmup_ms: float | None = None
    warmup_counted: bool = False
    peak_rss_mb: float | None = None
    counters: Counters | None = None
    extra: dict = field(default_factory=dict)

    @property
    def median_ms(self) -> float:
        return statistics.median(self.samples_ms)

    def as_dict(self) -> dict:
        d = {
            "scene": self.scene,
            "width": self.width,
            "height": self.height,
            "n": self.n,
            "backend": self.backend,
            "mode": self.mode,
            "ms_median": self.median_ms,
            "ms_min": min(self.samples_ms),
            "fps": 1000.0 / self.median_ms,
            "n_samples": len(self.samples_ms),
            "samples_ms": [round(s, 3) for s in self.samples_ms],
            "warmup_ms": self.warmup_ms,
            "warmup_counted_as_sample": self.warmup_counted,
            "peak_rss_increase_mb": self.peak_rss_mb,
        }
        if self.counters is not None:
            d.update(
                tile_intersections=self.counters.isect,
                max_per_tile=self.counters.max_per_tile,
                visible_gaussians=self.counters.visible,
            )
        d.update(self.extra)
        return d


class TorchPlanner:
    """Decides which torch runs happen and how many samples each gets, within a time budget."""

    def __init__(self, budget_s: float, repeats: int, mem_cap_gb: float, pending: list[tuple[str, int]]):
        self.budget_s = budget_s
        self.repeats = repeats
        self.mem_cap_gb = mem_cap_gb
        self.spent_s = 0.0
        self.ns_per_elem: dict[str, list[float]] = {"fwd": [], "fwdbwd": []}
        self.pending = list(pending)  # (mode, work) of required runs not yet done

    def rate(self, mode: str) -> float:
        if self.ns_per_elem[mode]:
            return statistics.median(self.ns_per_elem[mode])
        if mode == "fwdbwd" and self.ns_per_elem["fwd"]:
            return 2.5 * statistics.median(self.ns_per_elem["fwd"])
        return TORCH_INIT_NS_PER_ELEM[mode]

    def estimate_s(self, mode: str, work: int) -> float:
        return self.rate(mode) * work * 1e-9

    @staticmethod
    def bwd_mem_gb(work: int) -> float:
        return TORCH_BWD_BYTES_PER_ELEM * work / 2**30

    def reserve_s(self) -> float:
        return sum(self.estimate_s(m, w) for m, w in self.pending)

    def plan(self, mode: str, work: int, required: bool) -> tuple[int, str | None]:
        """Number of timed samples (0: skip) and the reason for skipping."""
        if required and (mode, work) in self.pending:
            self.pending.remove((mode, work))
        est = self.estimate_s(mode, work)
        left = self.budget_s - self.spent_s - self.reserve_s()
        if not required and est > left:
            return 0, f"torch time budget (needs ≈{est:.0f} s, {max(left, 0):.0f} s left)"
        return max(1, min(self.repeats, int(left // max(est, 1e-3)))), None

    def record(self, mode: str, work: int, seconds: float) -> None:
        self.spent_s += seconds
        self.ns_per_elem[mode].append(seconds * 1e9 / max(work, 1))


def torch_status(res: tuple[int, int], n: int) -> str | None:
    """'required', 'optional' or None for a config."""
    if n not in TORCH_COUNTS:
        return None
    if res in TORCH_REQUIRED_RES:
        return "required"
    if res in TORCH_OPTIONAL_RES:
        return "optional"
    return None


def bench(args) -> dict:
    resolutions = QUICK_RESOLUTIONS if args.quick else RESOLUTIONS
    counts = QUICK_COUNTS if args.quick else COUNTS
    rep_cpu = args.repeats if args.repeats is not None else 5
    rep_torch = args.torch_repeats if args.torch_repeats is not None else (args.repeats or 3)
    budget = args.torch_budget if args.torch_budget is not None else (60.0 if args.quick else 300.0)
    mem_avail_gb = _mem_available_gb()
    mem_cap = args.torch_mem_gb if args.torch_mem_gb is not None else min(6.0, 0.5 * mem_avail_gb)
    mem = PeakRSS()

    t_start = time.perf_counter()
    load_start = os.getloadavg()

    compile_info = {} if args.skip_compile else measure_compile()

    # One tiny render per backend and mode so that code loading and one-off initialisation are paid
    # before anything is measured.
    tiny = make_inputs(random_scene(500, 1, focal_px=0.9 * 64), 64, 48)
    for backend in ("cpu", "torch"):
        t0 = time.perf_counter()
        run_fwd(tiny, backend)
        clear_grads(tiny)
        run_fwdbwd(tiny, backend)
        log(
            f"[warm-up] tiny {backend} render, forward and forward+backward: {time.perf_counter() - t0:.2f} s"
        )

    configs = [(res, n, kind) for res in resolutions for n in counts for kind in SCENES]
    scenes: dict[tuple[str, int], GaussianScene] = {}
    inputs: dict = {}
    counters: dict = {}
    for res, n, kind in configs:
        if (kind, n) not in scenes:
            scenes[(kind, n)] = make_scene(kind, n)
        inp = make_inputs(scenes[(kind, n)], *res)
        inputs[(res, n, kind)] = inp
        counters[(res, n, kind)] = count_intersections(inp)

    # Torch runs that must happen (for the budget's reserve): the required configs' forward always,
    # their forward+backward when the memory estimate fits.
    pending = []
    for cfg in configs:
        res, n, _ = cfg
        if torch_status(res, n) == "required":
            work = counters[cfg].torch_work
            pending.append(("fwd", work))
            if TorchPlanner.bwd_mem_gb(work) <= mem_cap:
                pending.append(("fwdbwd", work))
    planner = TorchPlanner(budget, rep_torch, mem_cap, pending)

    rows: list[Row] = []
    skipped: list[dict] = []
    for cfg in configs:
        res, n, kind = cfg
        inp = inputs[cfg]
        cnt = counters[cfg]
        tstat = torch_status(res, n)
        label = f"{kind} {res[0]}x{res[1]} {n // 1000}k"
        for mode in MODES:
            runner = RUNNERS[mode]
            cpu_row = Row(kind, res[0], res[1], n, "cpu", mode, counters=cnt)
            torch_row = None
            n_torch = 0
            if tstat is not None:
                if mode == "fwdbwd" and planner.bwd_mem_gb(cnt.torch_work) > mem_cap:
                    reason = (
                        f"torch autograd memory ≈{planner.bwd_mem_gb(cnt.torch_work):.1f} GB "
                        f"> cap {mem_cap:.1f} GB ({math.ceil(cnt.max_per_tile / TORCH_CHUNK)} chunks "
                        f"of {cnt.tiles}×{TORCH_CHUNK}×256)"
                    )
                else:
                    n_torch, reason = planner.plan(mode, cnt.torch_work, tstat == "required")
                if n_torch == 0:
                    skipped.append(
                        {
                            "scene": kind,
                            "width": res[0],
                            "height": res[1],
                            "n": n,
                            "backend": "torch",
                            "mode": mode,
                            "reason": reason,
                        }
                    )
                else:
                    torch_row = Row(kind, res[0], res[1], n, "torch", mode, counters=cnt)
                    torch_row.extra["torch_estimated_s"] = planner.estimate_s(mode, cnt.torch_work)

            log(f"[{label} {mode}] cpu ×{rep_cpu}" + (f", torch ×{n_torch}" if torch_row else ""))
            # warm-up calls (memory is measured on them)
            clear_grads(inp)
            dt, cpu_row.peak_rss_mb, cpu_out = mem.measure(lambda r=runner, x=inp: r(x, "cpu"))
            cpu_row.warmup_ms = dt * 1e3
            torch_left = n_torch
            if torch_row is not None:
                clear_grads(inp)
                dt, torch_row.peak_rss_mb, torch_out = mem.measure(lambda r=runner, x=inp: r(x, "torch"))
                torch_row.warmup_ms = dt * 1e3
                planner.record(mode, cnt.torch_work, dt)
                if dt > COUNTS_WARMUP_AS_SAMPLE_S:
                    torch_row.samples_ms.append(dt * 1e3)
                    torch_row.warmup_counted = True
                    torch_left -= 1
                if mode == "fwd":
                    torch_row.extra["max_abs_diff_rgb_vs_cpu"] = float(
                        (torch_out.rgb - cpu_out.rgb).abs().max()
                    )
                    torch_row.extra["max_abs_diff_alpha_vs_cpu"] = float(
                        (torch_out.alpha - cpu_out.alpha).abs().max()
                    )
                del torch_out
            del cpu_out
            # interleaved samples (the speedup compares these, taken under the same conditions)
            interleaved: list[float] = []
            for i in range(max(rep_cpu, torch_left)):
                if i < rep_cpu:
                    clear_grads(inp)
                    t0 = time.perf_counter()
                    runner(inp, "cpu")
                    interleaved.append((time.perf_counter() - t0) * 1e3)
                if torch_row is not None and i < torch_left:
                    clear_grads(inp)
                    t0 = time.perf_counter()
                    runner(inp, "torch")
                    dt = time.perf_counter() - t0
                    torch_row.samples_ms.append(dt * 1e3)
                    planner.record(mode, cnt.torch_work, dt)
            if torch_row is None:
                cpu_row.samples_ms = interleaved
            else:
                # the cpu backend's own figure: a block of cpu-only calls after the torch ones (a call right
                # after a multi-second, GB-sized torch call runs slower: cold caches, paged-in memory)
                for _ in range(rep_cpu):
                    clear_grads(inp)
                    t0 = time.perf_counter()
                    runner(inp, "cpu")
                    cpu_row.samples_ms.append((time.perf_counter() - t0) * 1e3)
                cpu_row.extra["interleaved_samples_ms"] = [round(x, 3) for x in interleaved]
                cpu_row.extra["interleaved_ms_median"] = statistics.median(interleaved)
            clear_grads(inp)
            rows.append(cpu_row)
            if torch_row is not None:
                rows.append(torch_row)
                speed = torch_row.median_ms / cpu_row.extra["interleaved_ms_median"]
                cpu_row.extra["speedup_vs_torch"] = speed
                torch_row.extra["speedup_cpu_vs_this"] = speed
            msg = f"    cpu {cpu_row.median_ms:.1f} ms"
            if torch_row is not None:
                msg += f", torch {torch_row.median_ms:.0f} ms ({len(torch_row.samples_ms)} samples)"
            log(msg)

    return {
        "rows": rows,
        "skipped": skipped,
        "compile": compile_info,
        "settings": {
            "quick": args.quick,
            "repeats_cpu": rep_cpu,
            "repeats_torch": rep_torch,
            "torch_budget_s": budget,
            "torch_spent_s": planner.spent_s,
            "torch_mem_cap_gb": mem_cap,
            "mem_available_gb_at_start": mem_avail_gb,
            "memory_method": mem.method,
            "camera": f"origin, looking down +z; fx=fy={FOCAL_FRACTION}·W, cx=W/2, cy=H/2, "
            f"HFoV {hfov_deg():.1f}°",
            "loss": "sum(rgb·w_rgb) + sum(depth·w_depth) + sum(alpha·w_alpha), fixed random weights",
            "seed": SEED,
        },
        "env": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numba": _numba_version(),
            "torch_threads": torch.get_num_threads(),
            "numba_threads": _numba_threads(),
            "cpu_count": os.cpu_count(),
            "loadavg_start": load_start,
            "loadavg_end": os.getloadavg(),
            "wall_s": time.perf_counter() - t_start,
        },
    }


def _mem_available_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return 8.0


def _numba_version() -> str:
    import numba

    return numba.__version__


def _numba_threads() -> str:
    import numba

    try:
        layer = numba.threading_layer()
    except ValueError:
        layer = "not initialised"
    return f"{numba.get_num_threads()} ({layer})"


# --------------------------------------------------------------------------------------------------
# Reporting


def fmt_ms(ms: float | None) -> str:
    if ms is None:
        return "—"
    if ms < 10:
        return f"{ms:.2f}"
    if ms < 100:
        return f"{ms:.1f}"
    return f"{ms:.0f}"


def fmt_fps(ms: float | None) -> str:
    if ms is None:
        return "—"
    fps = 1000.0 / ms
    return f"{fps:.1f}" if fps < 10 else f"{fps:.0f}"


def fmt_mb(mb: float | None) -> str:
    if mb is None:
        return "—"
    return f"{mb:.0f}" if mb >= 10 else f"{mb:.1f}"


def find(rows: list[Row], scene: str, res, n: int, backend: str, mode: str) -> Row | None:
    for r in rows:
        if (r.scene, (r.width, r.height), r.n, r.backend, r.mode) == (scene, tuple(res), n, backend, mode):
            return r
    return None


def print_tables(console: Console, result: dict, resolutions, counts) -> None:
    rows = result["rows"]
    s = result["settings"]
    for kind in SCENES:
        desc = {
            "random": "random scene (x, y ∈ [−1, 1] m, z ∈ [2, 5] m)",
            "object": "object-like scene (centred 0.6 m in front, background plane at 0.9 m)",
        }[kind]
        table = Table(
            title=f"{desc} — camera {s['camera']}",
            caption=(
                "ms = median of repeats (cpu ×{}, torch ≤{}; '(n=k)' marks fewer torch samples); "
                "fps = 1000/ms; speedup = torch ms / cpu ms of the interleaved calls; isect = Gaussian×tile pairs.\n"
                "peak ΔRSS = peak resident-set rise of the process over the config's first call "
                "(malloc_trim + /proc peak reset before it), MiB, fwd / fwd+bwd."
            ).format(s["repeats_cpu"], s["repeats_torch"]),
            caption_justify="left",
        )
        for name, just in (
            ("res", "left"),
            ("N", "right"),
            ("isect", "right"),
            ("cpu fwd ms", "right"),
            ("fps", "right"),
            ("torch fwd ms", "right"),
            ("speedup", "right"),
            ("cpu f+b ms", "right"),
            ("fps", "right"),
            ("torch f+b ms", "right"),
            ("speedup", "right"),
            ("peak ΔRSS cpu", "right"),
            ("peak ΔRSS torch", "right"),
        ):
            table.add_column(name, justify=just)
        for res in resolutions:
            for n in counts:
                cells = [f"{res[0]}×{res[1]}", f"{n // 1000}k"]
                cf = find(rows, kind, res, n, "cpu", "fwd")
                cells.append(f"{cf.counters.isect:,}" if cf and cf.counters else "—")
                mems = {"cpu": [], "torch": []}
                for mode in MODES:
                    c = find(rows, kind, res, n, "cpu", mode)
                    t = find(rows, kind, res, n, "torch", mode)
                    cells.append(fmt_ms(c.median_ms if c else None))
                    cells.append(fmt_fps(c.median_ms if c else None))
                    if t is not None:
                        tag = f" (n={len(t.samples_ms)})" if len(t.samples_ms) < s["repeats_torch"] else ""
                        cells.append(fmt_ms(t.median_ms) + tag)
                        cells.append(f"{t.median_ms / c.median_ms:.0f}×" if c else "—")
                    else:
                        cells += ["—", "—"]
                    mems["cpu"].append(fmt_mb(c.peak_rss_mb) if c else "—")
                    mems["torch"].append(fmt_mb(t.peak_rss_mb) if t else "—")
                cells.append(" / ".join(mems["cpu"]))
                cells.append(" / ".join(mems["torch"]))
                table.add_row(*cells)
        console.print(table)
        notes = [sk for sk in result["skipped"] if sk["scene"] == kind]
        for sk in notes:
            console.print(
                f"  torch {MODE_NAMES[sk['mode']]} not run at {sk['width']}×{sk['height']} "
                f"{sk['n'] // 1000}k: {sk['reason']}"
            )
        console.print()


def compile_summary(info: dict) -> tuple[float | None, float | None]:
    cold = info.get("cold", {})
    warm = info.get("warm_cache", {})
    return cold.get("overhead_s"), warm.get("overhead_s")


def print_compile(console: Console, info: dict) -> None:
    if not info:
        console.print("numba compile: not measured (--skip-compile)\n")
        return
    table = Table(
        title="numba compile (child processes, random 5k at 320×240, forward+backward)",
        caption="overhead = first call − warm call (fwd and bwd separately, summed); "
        "cold: empty NUMBA_CACHE_DIR; warm cache: a second process reusing it.",
        caption_justify="left",
    )
    for name in ("process", "first fwd s", "first bwd s", "warm fwd+bwd ms", "first-call overhead s"):
        table.add_column(name, justify="right" if name != "process" else "left")
    for label, name in (("cold", "cold compile (empty cache)"), ("warm_cache", "warm cache (2nd process)")):
        r = info.get(label, {})
        if "overhead_s" not in r:
            table.add_row(name, "error", str(r.get("error", "")), "", "")
            continue
        table.add_row(
            name,
            f"{r['first_fwd_s']:.2f}",
            f"{r['first_bwd_s']:.2f}",
            f"{(r['warm_fwd_s'] + r['warm_bwd_s']) * 1e3:.1f}",
            f"{r['overhead_s']:.2f}",
        )
    console.print(table)
    console.print()


def goals(rows: list[Row]) -> list[dict]:
    """The three goals, judged on medians; `best` (fastest sample) is context for a loaded machine."""
    res = (320, 240)
    cf = find(rows, "random", res, 50_000, "cpu", "fwd")
    cb = find(rows, "random", res, 50_000, "cpu", "fwdbwd")
    tf = find(rows, "random", res, 50_000, "torch", "fwd")

    def ms_goal(name: str, row: Row | None, limit: float) -> dict:
        value = row.median_ms if row else None
        return {
            "goal": name,
            "target": f"≤ {limit:.0f} ms",
            "value": value,
            "best": min(row.samples_ms) if row else None,
            "unit": "ms",
            "pass": (value <= limit) if row else None,
        }

    sp = tf.median_ms / cf.extra["interleaved_ms_median"] if (tf and cf) else None
    return [
        ms_goal("forward, random 320×240 50k", cf, GOAL_FWD_MS),
        ms_goal("forward+backward, random 320×240 50k", cb, GOAL_FWDBWD_MS),
        {
            "goal": "forward speedup vs torch, random 320×240 50k",
            "target": f"≥ {GOAL_SPEEDUP_FWD:.0f}×",
            "value": sp,
            "best": min(tf.samples_ms) / min(cf.extra["interleaved_samples_ms"]) if (tf and cf) else None,
            "unit": "×",
            "pass": (sp >= GOAL_SPEEDUP_FWD) if sp else None,
        },
    ]


def print_goals(console: Console, gl: list[dict]) -> None:
    table = Table(title="goals (random scene, 320×240, 50k Gaussians), judged on medians")
    for name in ("goal", "target", "measured (median)", "fastest sample", "result"):
        table.add_column(name)
    for g in gl:
        if g["value"] is None:
            table.add_row(g["goal"], g["target"], "not measured", "—", "[yellow]n/a[/yellow]")
            continue
        if g["unit"] == "ms":
            val, best = f"{g['value']:.1f} ms", f"{g['best']:.1f} ms"
        else:
            val, best = f"{g['value']:.1f}×", f"{g['best']:.1f}× (min/min)"
        verdict = "[green]PASS[/green]" if g["pass"] else "[red]FAIL[/red]"
        table.add_row(g["goal"], g["target"], val, best, verdict)
    console.print(table)


def json_summary(result: dict, gl: list[dict]) -> dict:
    rows = result["rows"]
    res = (320, 240)

    def ms(backend, mode, n=50_000):
        r = find(rows, "random", res, n, backend, mode)
        return r.median_ms if r else None

    def speed(mode, n=50_000):
        """torch median / the interleaved cpu median (both taken under the same conditions)."""
        r = find(rows, "random", res, n, "cpu", mode)
        return r.extra.get("speedup_vs_torch") if r else None

    cold, warm = compile_summary(result["compile"])
    out = {
        "fwd_ms_320x240_50k": ms("cpu", "fwd"),
        "fwdbwd_ms_320x240_50k": ms("cpu", "fwdbwd"),
        "speedup_vs_torch_fwd_320x240_50k": speed("fwd"),
        "speedup_vs_torch_fwdbwd_320x240_50k": speed("fwdbwd"),
        "speedup_vs_torch_fwd_320x240_5k": speed("fwd", 5_000),
        "speedup_vs_torch_fwdbwd_320x240_5k": speed("fwdbwd", 5_000),
        "torch_fwd_ms_320x240_50k": ms("torch", "fwd"),
        "compile_s_cold": cold,
        "first_call_s_warm_cache": warm,
        "compile": result["compile"],
        "goals": gl,
        "settings": result["settings"],
        "env": result["env"],
        "results": [r.as_dict() for r in rows],
        "skipped": result["skipped"],
    }
    for sk in result["skipped"]:
        if (sk["scene"], sk["width"], sk["height"], sk["n"]) == ("random", 320, 240, 50_000):
            out[f"speedup_vs_torch_{sk['mode']}_320x240_50k_skipped"] = sk["reason"]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    p.add_argument("--quick", action="store_true", help="320×240 with 5k and 50k Gaussians only")
    p.add_argument(
        "--repeats", type=int, default=None, help="timed repeats per config (default 5 cpu, 3 torch)"
    )
    p.add_argument("--torch-repeats", type=int, default=None, help="timed repeats for torch (default 3)")
    p.add_argument(
        "--torch-budget",
        type=float,
        default=None,
        help="seconds of torch-backend time (default 300, quick 60); lowers torch repeats "
        "and drops optional torch configs",
    )
    p.add_argument(
        "--torch-mem-gb",
        type=float,
        default=None,
        help="skip torch forward+backward whose estimated memory exceeds this "
        "(default min(6, half of MemAvailable))",
    )
    p.add_argument("--skip-compile", action="store_true", help="do not measure numba compile time")
    p.add_argument("--_compile-child", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._compile_child:
        compile_child()
        return 0

    result = bench(args)
    console = Console()
    if not console.is_terminal:
        console = Console(width=200)
    resolutions = QUICK_RESOLUTIONS if args.quick else RESOLUTIONS
    counts = QUICK_COUNTS if args.quick else COUNTS
    env = result["env"]
    console.print(
        f"splatsim render benchmark — torch {env['torch']} ({env['torch_threads']} threads), "
        f"numba {env['numba']} ({env['numba_threads']} threads), {env['cpu_count']} CPUs, "
        f"load average {env['loadavg_start'][0]:.2f} → {env['loadavg_end'][0]:.2f}, "
        f"wall {env['wall_s']:.0f} s, torch time {result['settings']['torch_spent_s']:.0f} s "
        f"(budget {result['settings']['torch_budget_s']:.0f} s)\n"
    )
    print_tables(console, result, resolutions, counts)
    print_compile(console, result["compile"])
    gl = goals(result["rows"])
    print_goals(console, gl)
    if args.json:
        console.file.flush()
        sys.stdout.flush()
        print(json.dumps(json_summary(result, gl)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
