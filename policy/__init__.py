"""Handover policy: dataset reader, CNN, training, closed-loop evaluation, export."""
