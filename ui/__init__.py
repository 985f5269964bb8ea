"""The `splatsim` command line and the gradio web app."""

import splatsim._threads  # noqa: F401  (OpenMP spin-wait, before torch loads)
