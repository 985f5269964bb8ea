"""The OpenMP spin-wait default is set on import, and a user's own value is kept."""

import os
import subprocess
import sys


def _spincount(env_extra: dict[str, str]) -> str:
    env = {k: v for k, v in os.environ.items() if k != "GOMP_SPINCOUNT"}
    env.update(env_extra)
    code = "import trajgen, os; print(os.environ['GOMP_SPINCOUNT'])"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def test_default_spincount_is_set_on_import():
    assert _spincount({}) == "10000"


def test_user_spincount_is_kept():
    assert _spincount({"GOMP_SPINCOUNT": "123"}) == "123"
