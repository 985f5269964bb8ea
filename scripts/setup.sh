#!/usr/bin/env bash
# Creates (or reuses) the virtual environment and installs splatsim with its test extras.
# Installs the few system libraries a fresh Debian/Ubuntu machine lacks (open3d needs libusb-1.0).
set -euo pipefail
VENV="${1:-.venv}"
TORCH_PIP_ARGS="${2:-}"

need_pkgs=()
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p | grep -q 'libusb-1.0.so.0'; then
  need_pkgs+=(libusb-1.0-0)
fi
if command -v ldconfig >/dev/null 2>&1 && ! ldconfig -p | grep -q 'libgomp.so.1'; then
  need_pkgs+=(libgomp1)
fi
if [ ${#need_pkgs[@]} -gt 0 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing system packages: ${need_pkgs[*]}"
    $SUDO apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "[setup] please install: ${need_pkgs[*]} (open3d needs them)" >&2
  fi
fi

# --- chromium for the web app's browser test (tests/ui/test_app_browser.py) -------------------------
# Debian's chromium, driven by playwright's Python package; never `playwright install` (a browser
# download). Without chromium (no apt-get, or the install fails) the browser test is skipped.
if ! command -v chromium >/dev/null 2>&1; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    echo "[setup] installing chromium (for the web app's browser test)"
    { $SUDO apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null; } \
      || echo "[setup] could not install chromium: the web app's browser test will be skipped" >&2
  else
    echo "[setup] no chromium and no apt-get: the web app's browser test will be skipped" >&2
  fi
fi
# --- end of the chromium block ---------------------------------------------------------------------

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
fi
# torch first, pinned: the CPU build (or whatever TORCH_PIP_ARGS points at), never an unpinned CUDA pull.
# shellcheck disable=SC2086
"$VENV/bin/pip" install -q torch==2.13.0 $TORCH_PIP_ARGS
"$VENV/bin/pip" install -q -e ".[dev]"
echo "[setup] done: $VENV"
