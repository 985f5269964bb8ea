"""The web app in a real browser (Debian's chromium, driven by playwright), on tiny settings.

generate a capture → reconstruct (closing the tab while it runs and reopening it) → grasps (and the
d_s slider) → demonstrations, asserting on what the page shows. Screenshots go to the test's tmp_path and
to ``test-artifacts/ui/`` at the repository root.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import time
from pathlib import Path

import pytest

pytest.importorskip("gradio")
playwright_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright (the Python package) is not installed"
)

from ui.app import AppConfig, launch  # noqa: E402

pytestmark = pytest.mark.slow

CHROMIUM = os.environ.get("SPLATSIM_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ARTIFACTS = Path(__file__).resolve().parents[2] / "test-artifacts" / "ui"
STEP_TIMEOUT_MS = 240_000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def chromium():
    if not Path(CHROMIUM).is_file():
        pytest.skip(f"{CHROMIUM} not found: install Debian's chromium (scripts/setup.sh does, with apt-get)")
    return CHROMIUM


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    studio = launch(
        AppConfig(runs_dir=tmp_path_factory.mktemp("browser-runs"), port=_free_port()),
        prevent_thread_lock=True,
    )
    yield studio
    studio.close()


class Shots:
    """Numbered full-page screenshots in tmp_path, copied to test-artifacts/ui/."""

    def __init__(self, folder: Path) -> None:
        self.folder, self.n = folder, 0
        ARTIFACTS.mkdir(parents=True, exist_ok=True)

    def __call__(self, page, name: str) -> None:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copy2(path, ARTIFACTS / path.name)


def _set_number(page, elem_id: str, value) -> None:
    """Types a value into a Number or a Slider's number box and leaves the field (fires change/release)."""
    box = page.locator(f"#{elem_id} input[type=number]")
    box.fill(str(value))
    box.press("Enter")
    box.blur()


def _choose(page, elem_id: str, option: str) -> None:
    """Picks an option of a gradio Dropdown by its label."""
    box = page.locator(f"#{elem_id} input[role=combobox]")
    box.click()
    box.fill(option)
    page.locator(f"#{elem_id} ul[role=listbox] li", has_text=option).first.click()
    playwright_api.expect(box).to_have_value(option)


def _tab(page, name: str) -> None:
    page.get_by_role("tab", name=name).click()


def _expect_text(page, elem_id: str, pattern: str, timeout: int = STEP_TIMEOUT_MS) -> None:
    playwright_api.expect(page.locator(f"#{elem_id}")).to_contain_text(re.compile(pattern), timeout=timeout)


def test_generate_reconstruct_grasps_demos(chromium, studio, tmp_path):
    expect = playwright_api.expect
    expect.set_options(timeout=30_000)  # a loaded 2-core machine answers slowly
    shots = Shots(tmp_path)
    url = studio.blocks.local_url
    errors: list[str] = []
    t0 = time.perf_counter()
    with playwright_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1400, "height": 1000})
        context.set_default_timeout(30_000)
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(url)
        expect(page.locator("#job-status")).to_contain_text("Idle")

        # A named run.
        page.locator("#new-run-name textarea, #new-run-name input").first.fill("browser-run")
        page.locator("#new-run-btn").click()
        expect(page.locator("#run-select input[role=combobox]")).to_have_value(re.compile("browser-run"))
        _expect_text(page, "run-info", "finished: nothing yet")

        # 1. Capture: a tiny synthetic handover.
        _choose(page, "capture-object", "foam_brick")
        _set_number(page, "capture-views", 4)
        _choose(page, "capture-resolution", "160×120 (0.25)")
        page.locator("#capture-generate-btn").click()
        _expect_text(page, "capture-status", "✓ generate capture")
        _expect_text(page, "capture-summary", r"4 views at 160×120 px", timeout=30_000)
        expect(page.locator("#capture-gallery img")).to_have_count(12, timeout=30_000)
        shots(page, "capture")

        # 2. Scene: reconstruct; close the tab while it runs, reopen, and find it running, then done.
        _tab(page, "2 · Scene")
        _set_number(page, "scene-steps", 8)
        page.locator("#scene-run-btn").click()
        _expect_text(page, "job-status", "reconstruction \\(run browser-run\\)", timeout=60_000)
        page.close()
        page = context.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}?run=browser-run")
        expect(page.locator("#run-select input[role=combobox]")).to_have_value(re.compile("browser-run"))
        _tab(page, "2 · Scene")
        _expect_text(page, "scene-status", "✓ reconstruction")
        expect(page.locator("#scene-heldout img")).to_be_visible(timeout=60_000)
        _expect_text(page, "scene-report", "held-out PSNR", timeout=60_000)
        _expect_text(page, "scene-report", "mask IoU object / hand")
        expect(page.locator("#scene-model3d canvas")).to_have_count(1, timeout=60_000)
        shots(page, "scene")

        # 3. Grasps: compute, then move the d_s slider and see the filter change at once.
        _tab(page, "3 · Grasps")
        _set_number(page, "grasps-topk", 3)
        page.locator("#grasps-run-btn").click()
        _expect_text(page, "grasps-status", "✓ grasps")
        _expect_text(
            page, "grasps-counts", r"safe grasps kept of \d+ candidates \(d_s = 10\.0 cm", timeout=30_000
        )
        expect(page.locator("#grasps-plot .js-plotly-plot")).to_have_count(1, timeout=60_000)
        expect(page.locator("#grasps-plot")).to_contain_text("targets")
        shots(page, "grasps")
        _set_number(page, "grasps-ds", 0.16)
        _expect_text(page, "grasps-counts", r"d_s = 16\.0 cm", timeout=30_000)
        shots(page, "grasps-ds-16cm")
        _set_number(page, "grasps-ds", 0.1)
        _expect_text(
            page, "grasps-counts", r"Saved to grasps\.json \(d_s = 10\.0 cm, top-K 3\)", timeout=30_000
        )

        # 4. Demonstrations on a tiny config.
        _tab(page, "4 · Demonstrations")
        _set_number(page, "demos-k", 2)
        _set_number(page, "demos-topk", 1)
        _choose(page, "demos-size", "32")
        _set_number(page, "demos-workers", 1)
        page.locator("#demos-run-btn").click()
        _expect_text(page, "demos-status", "✓ demonstrations")
        _expect_text(page, "demos-stats", r"episodes / tuples\s*2 / \d+", timeout=30_000)
        expect(page.locator("#demos-trajectories img")).to_be_visible(timeout=60_000)
        expect(page.locator("#demos-video video")).to_have_count(1, timeout=60_000)
        shots(page, "demos")

        _tab(page, "5 · Policy")
        expect(page.locator("#policy-train-btn")).to_be_visible()
        _expect_text(page, "run-info", "finished: capture, scene, grasps, demos", timeout=30_000)
        shots(page, "policy-tab")
        browser.close()
    assert not errors, f"JavaScript errors on the page: {errors}"
    print(f"browser walk-through: {time.perf_counter() - t0:.0f} s")
