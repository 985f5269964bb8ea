"""The `splatsim` command line: one entry point, a subcommand per stage (like `ns-train`).

splatsim capture synth | dexycb | nerfstudio   make a capture folder
splatsim render-check                           renderer smoke test (PNG)
splatsim demo                                   the whole studio on the built-in default scene
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Annotated, Literal, Optional, Union

import tyro

from policy.evaluate import EvalConfig
from policy.export import ExportConfig
from policy.train import TrainConfig
from recon.pipeline import ReconConfig
from recon.synth import SynthConfig
from trajgen.batch import DemosConfig
from trajgen.grasps import GraspConfig
from ui.app_config import AppConfig
from ui.demo import DemoPlan


@dataclasses.dataclass
class CaptureSynth:
    """Generate a synthetic handover capture (seeded, deterministic, with ground truth)."""

    out: Path = Path("runs/default/capture")
    """Capture folder to write."""
    config: tyro.conf.OmitArgPrefixes[SynthConfig] = dataclasses.field(default_factory=SynthConfig)
    overwrite: bool = False
    """Replace an existing capture in `out`."""

    def run(self) -> int:
        import imageio.v3 as iio
        from rich.console import Console

        from recon.synth import contact_sheet, generate_capture

        console = Console()
        with console.status(f"rendering {self.config.num_views} views of '{self.config.object}'"):
            cap = generate_capture(self.config, self.out, overwrite=self.overwrite)
        sheet = self.out / "contact_sheet.png"
        iio.imwrite(sheet, contact_sheet(cap))
        console.print(f"capture with {cap.num_views} views → {self.out}  (preview: {sheet})")
        return 0


@dataclasses.dataclass
class CaptureDexYCB:
    """Convert one frame of a DexYCB sequence into a capture folder."""

    root: Path
    """DexYCB root (holding calibration/ and the subject folders)."""
    sequence: str
    """Sequence path relative to the root, e.g. 20200709-subject-01/20200709_141754."""
    out: Path = Path("runs/dexycb/capture")
    frame: int = 0
    serials: tuple[str, ...] = ()
    """Camera serials to keep (default: all of the sequence's cameras)."""
    overwrite: bool = False

    def run(self) -> int:
        from recon.readers.dexycb import read_dexycb

        cap = read_dexycb(
            self.root,
            self.sequence,
            self.frame,
            list(self.serials) or None,
            self.out,
            overwrite=self.overwrite,
        )
        print(f"capture with {cap.num_views} views → {self.out}")
        return 0


@dataclasses.dataclass
class CaptureNerfstudio:
    """Convert a nerfstudio transforms.json with depth and label masks into a capture folder."""

    transforms: Path
    """The transforms.json file."""
    out: Path = Path("runs/nerfstudio/capture")
    depth_unit_scale_factor: float = 1e-3
    """Metres per depth-file unit (nerfstudio's default: millimetres)."""
    overwrite: bool = False

    def run(self) -> int:
        from recon.readers.nerfstudio import read_nerfstudio

        cap = read_nerfstudio(
            self.transforms, self.out, self.depth_unit_scale_factor, overwrite=self.overwrite
        )
        print(f"capture with {cap.num_views} views → {self.out}")
        return 0


@dataclasses.dataclass
class CaptureGroup:
    """Make a capture folder: synthetic, or converted from DexYCB / nerfstudio."""

    cmd: tyro.conf.OmitArgPrefixes[
        Union[
            Annotated[CaptureSynth, tyro.conf.subcommand("synth")],
            Annotated[CaptureDexYCB, tyro.conf.subcommand("dexycb")],
            Annotated[CaptureNerfstudio, tyro.conf.subcommand("nerfstudio")],
        ]
    ]

    def run(self) -> int:
        return self.cmd.run()


@dataclasses.dataclass
class Recon:
    """Reconstruct a capture into a metric, labelled 3DGS scene (resumes from its last checkpoint)."""

    capture: Path = Path("runs/default/capture")
    """Capture folder (capture.json + rgb/ depth/ masks/)."""
    out: Path = Path("runs/default/scene")
    """Scene folder to write (scene.ply, hand.ply, object.ply, scene.json, recon_report.json)."""
    config: tyro.conf.OmitArgPrefixes[ReconConfig] = dataclasses.field(default_factory=ReconConfig)

    def run(self) -> int:
        from rich.console import Console

        from recon.pipeline import run_recon

        rep = run_recon(self.config, self.capture, self.out).report
        rep = {**rep, **rep.get("summary", {})}
        Console().print(
            f"scene → {self.out}: {rep.get('num_gaussians')} Gaussians, held-out PSNR "
            f"{rep.get('heldout_psnr_db')} dB, median depth error {rep.get('depth_median_err_m')} m"
        )
        return 0


@dataclasses.dataclass
class Grasps:
    """Sample grasps on the reconstructed object and keep those that stay clear of the hand."""

    scene: Path = Path("runs/default/scene")
    """Scene folder from `splatsim recon` (object.ply, hand.ply, scene.json)."""
    out: Path = Path("runs/default/grasps.json")
    """grasps.json to write (grasps.png is written beside it)."""
    config: tyro.conf.OmitArgPrefixes[GraspConfig] = dataclasses.field(default_factory=GraspConfig)
    gripper_model: Optional[Literal["robotiq_2f_85", "robotiq_2f_140"]] = None  # noqa: UP045 (tyro)
    """A built-in gripper instead of the gripper fields below (robotiq_2f_140 for objects wider than the
    2F-85's 85 mm stroke, such as a coffee can)."""

    def run(self) -> int:
        from rich.console import Console

        from trajgen.grasps import run_grasps
        from trajgen.gripper import gripper_by_name

        cfg = self.config
        if self.gripper_model is not None:
            cfg = dataclasses.replace(cfg, gripper=gripper_by_name(self.gripper_model))
        res = run_grasps(cfg, self.scene, self.out)
        Console().print(f"{len(res.kept)} safe grasps kept → {self.out} (picture: {res.png_path})")
        return 0


@dataclasses.dataclass
class Demos:
    """Plan hand-eye trajectories to the safe grasps and render them into a demonstration dataset."""

    config: tyro.conf.OmitArgPrefixes[DemosConfig] = dataclasses.field(default_factory=DemosConfig)

    def run(self) -> int:
        from rich.console import Console

        from trajgen.batch import run_demos

        res = run_demos(self.config)
        Console().print(
            f"{res.episodes} episodes, {res.tuples} tuples ({res.tuples_per_s:.1f} tuples/s) → {res.out_dir}"
        )
        return 0


@dataclasses.dataclass
class Train:
    """Train the handover policy (5-channel CNN, Eq. 17) on demonstration datasets."""

    config: tyro.conf.OmitArgPrefixes[TrainConfig] = dataclasses.field(default_factory=TrainConfig)

    def run(self) -> int:
        from policy.train import run_train

        res = run_train(self.config)
        print(f"policy → {res.out_dir} (training curve: {res.curve_png})")
        return 0


@dataclasses.dataclass
class Eval:
    """Closed-loop evaluation in the splat, side by side with the IBVS-MASK baseline."""

    config: tyro.conf.OmitArgPrefixes[EvalConfig] = dataclasses.field(default_factory=EvalConfig)

    def run(self) -> int:
        from policy.evaluate import run_eval

        run_eval(self.config)
        return 0


@dataclasses.dataclass
class Export:
    """Export the policy to ONNX with metadata and an onnxruntime parity check."""

    config: tyro.conf.OmitArgPrefixes[ExportConfig] = dataclasses.field(default_factory=ExportConfig)

    def run(self) -> int:
        from policy.export import run_export

        run_export(self.config)
        return 0


@dataclasses.dataclass
class App:
    """The studio web app: capture → scene → grasps → demos → policy in the browser (127.0.0.1)."""

    config: tyro.conf.OmitArgPrefixes[AppConfig] = dataclasses.field(default_factory=AppConfig)

    def run(self) -> int:
        from ui.app import launch

        launch(self.config)
        return 0


@dataclasses.dataclass
class Demo:
    """Run the whole studio on the built-in default scene: capture, scene, grasps, demos, policy, export, eval."""

    out: Path = Path("runs/demo")
    """Folder the run writes into."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """Render backend: auto = gsplat on CUDA where available, the compiled CPU rasteriser otherwise."""
    plan: DemoPlan = dataclasses.field(default_factory=DemoPlan)
    """Sizes of the run (the defaults fit a 2-core CPU in about ten minutes; docs/demo.md)."""

    def run(self) -> int:
        from ui.demo import run_demo

        return run_demo(self)


@dataclasses.dataclass
class RenderCheck:
    """Render a built-in Gaussian scene with the CPU backend and write a PNG (a renderer smoke test)."""

    out: str = "runs/render_check.png"
    """PNG to write (RGB | depth | labels side by side)."""
    scene: str = "object"
    """'object' (a compact object-like scene with hand and background labels) or 'random'."""
    num_gaussians: int = 20000
    width: int = 320
    height: int = 240
    seed: int = 0

    def run(self) -> int:
        from ui.render_check import render_check

        return render_check(self)


Commands = tyro.conf.OmitSubcommandPrefixes[
    Union[
        Annotated[Demo, tyro.conf.subcommand("demo")],
        Annotated[CaptureGroup, tyro.conf.subcommand("capture")],
        Annotated[Recon, tyro.conf.subcommand("recon")],
        Annotated[Grasps, tyro.conf.subcommand("grasps")],
        Annotated[Demos, tyro.conf.subcommand("demos")],
        Annotated[Train, tyro.conf.subcommand("train")],
        Annotated[Eval, tyro.conf.subcommand("eval")],
        Annotated[Export, tyro.conf.subcommand("export")],
        Annotated[App, tyro.conf.subcommand("app")],
        Annotated[RenderCheck, tyro.conf.subcommand("render-check")],
    ]
]


def main(argv: list[str] | None = None) -> int:
    cmd = tyro.cli(Commands, args=argv, prog="splatsim")
    try:
        rc = cmd.run()
    except (ValueError, FileNotFoundError) as e:  # user-facing errors (bad files, bad configs), no traceback
        print(f"splatsim: error: {e}", file=sys.stderr)
        return 2
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
