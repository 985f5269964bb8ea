"""Handover policy: dataset reader, CNN, training, closed-loop evaluation, export."""

import splatsim._threads  # noqa: F401  (OpenMP spin-wait, before torch loads)
