"""The `splatsim` command line and the gradio web app."""
