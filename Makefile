# splatsim: two commands.
#   make demo   set up .venv/ and run the whole studio on the built-in default scene
#   make test   set up .venv/ and run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# Extra pip arguments for torch (e.g. a CPU or CUDA wheel index on your machine).
TORCH_PIP_ARGS ?=

.PHONY: demo test setup system-deps lint bench figures clean-venv

$(VENV)/.installed: pyproject.toml
	@bash scripts/setup.sh "$(VENV)" "$(TORCH_PIP_ARGS)"
	@touch $@

setup: $(VENV)/.installed

demo: setup
	$(VENV)/bin/splatsim demo

test: setup
	$(PY) -m pytest -q tests

lint: setup
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

bench: setup
	$(PY) benchmarks/render.py

figures: demo
	bash scripts/readme_figures.sh runs/demo

clean-venv:
	rm -rf $(VENV)
