"""`AppConfig`: the web app's settings, importable without gradio (the CLI builds `splatsim app` from it)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ui.app_upload import ExtractLimits

__all__ = ["AppConfig"]


@dataclass
class AppConfig:
    """The studio web app: where runs live, where it listens, what it accepts."""

    runs_dir: Path = Path("runs")
    """Folder holding one folder per run (created); the app lists and reopens them."""
    host: str = "127.0.0.1"
    """Address to listen on: 127.0.0.1 keeps the app on this machine; 0.0.0.0 opens it to the network
    (then also set auth)."""
    port: int = 7860
    """Port to listen on (0: the first free one from 7860)."""
    max_upload_mb: int = 2048
    """Largest upload accepted (megabytes)."""
    max_extract_mb: int = 8192
    """Most bytes an uploaded zip may hold once extracted (megabytes)."""
    max_extract_files: int = 20_000
    """Most members an uploaded zip may hold."""
    max_compression_ratio: float = 200.0
    """Largest compression ratio of one zip member larger than 1 MB (a decompression-bomb guard)."""
    auth: str | None = None
    """'user:password' to require a login (advisable with a host other than 127.0.0.1)."""
    open_browser: bool = False
    """Open the app in the default browser once it listens."""

    def limits(self) -> ExtractLimits:
        """The zip extraction limits these settings give (`ui.app_upload.ExtractLimits`)."""
        return ExtractLimits(
            max_files=self.max_extract_files,
            max_total_bytes=self.max_extract_mb * 1024**2,
            max_file_bytes=min(self.max_extract_mb, 4096) * 1024**2,
            max_ratio=self.max_compression_ratio,
        )
