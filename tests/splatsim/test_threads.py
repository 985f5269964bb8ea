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


def test_numba_prefers_openmp_even_when_the_pool_starts_before_the_kernels():
    """A spawned demos worker sets numba's thread count before loading the kernels: still omp, no TBB warning."""
    code = (
        "import trajgen, numba; numba.set_num_threads(1);"
        "from splatsim.render import cpu_kernels;"
        "print(numba.config.THREADING_LAYER_PRIORITY[0], numba.threading_layer())"
    )
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER_PRIORITY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["omp", "omp"], out.stderr
    assert "TBB" not in out.stderr


def test_without_the_setting_numba_would_try_tbb_first():
    """The control for the test above: plain numba tries TBB first on this machine (and warns where the
    installed TBB is too old)."""
    code = "import numba; print(numba.config.THREADING_LAYER_PRIORITY[0])"
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_THREADING_LAYER_PRIORITY"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "tbb"
