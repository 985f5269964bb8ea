"""The `splatsim` command line: one entry point, a subcommand per stage (like `ns-train`)."""

from __future__ import annotations

import dataclasses
import sys
from typing import Annotated, Union

import tyro


@dataclasses.dataclass
class Demo:
    """Run the whole studio on the built-in default scene."""

    out: str = "runs/demo"
    """Folder the run writes into."""

    def run(self) -> int:
        from rich.console import Console

        console = Console()
        console.print("[bold]splatsim demo[/bold]: the end-to-end demo is not built yet.")
        console.print("Stages available now: `splatsim render-check` (renderer smoke test).")
        return 0


@dataclasses.dataclass
class RenderCheck:
    """Render a random Gaussian scene with the CPU backend and write a PNG (a renderer smoke test)."""

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


Commands = Union[
    Annotated[Demo, tyro.conf.subcommand("demo")],
    Annotated[RenderCheck, tyro.conf.subcommand("render-check")],
]


def main(argv: list[str] | None = None) -> int:
    cmd = tyro.cli(Commands, args=argv, prog="splatsim")
    rc = cmd.run()
    return int(rc or 0)


if __name__ == "__main__":
    sys.exit(main())
