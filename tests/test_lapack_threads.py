"""The first-call policy for SciPy's OpenBLAS (see transrate_jax/_src/lapack_threads.py).

Each case runs in a fresh interpreter: the policy depends on what was imported before. Importing
``transrate_jax`` changes nothing; the first library call on the CPU applies the policy.
"""

import json
import os
import subprocess
import sys

_PROBE = """
import json, os, sys
{before}
from threadpoolctl import threadpool_info
def blas():
  import scipy
  root = os.path.dirname(os.path.abspath(scipy.__file__))
  return [(i["filepath"].startswith(root), i["num_threads"]) for i in threadpool_info()
          if i["user_api"] == "blas"]
libs_before = blas()
import transrate_jax as tj
import numpy as np
at_import = {{"applied": tj._lapack_threads.current(), "libs": blas(),
              "cython_lapack": "scipy.linalg.cython_lapack" in sys.modules}}
tj.transrate(np.arange(40.0).reshape(20, 2) % 7, np.arange(20) % 2)
print(json.dumps({{"applied": tj._lapack_threads.current(), "libs": blas(),
                  "before": libs_before, "at_import": at_import,
                  "timeout_env": os.environ.get("OPENBLAS_THREAD_TIMEOUT")}}))
"""


def _probe(before="", env=None):
  environ = {k: v for k, v in os.environ.items()
             if k not in ("OPENBLAS_THREAD_TIMEOUT", "TRANSRATE_JAX_LAPACK_THREADS")}
  environ.update(env or {})
  out = subprocess.run([sys.executable, "-c", _PROBE.format(before=before)], env=environ,
                       capture_output=True, text=True, timeout=300, check=True)
  return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_changes_nothing():
  for before in ("import jax.numpy", "import numpy, scipy.linalg"):
    info = _probe(before)
    assert info["at_import"]["applied"] is None
    assert sorted(info["at_import"]["libs"]) == sorted(info["before"])  # nothing loaded or set
    if before == "import jax.numpy":
      assert not info["at_import"]["cython_lapack"]


def test_first_call_loads_scipy_blas_without_spinning_and_restores_env():
  info = _probe("import jax.numpy")
  assert info["applied"] == "thread_timeout"
  assert info["timeout_env"] is None  # the process environment is left as it was
  scipy_libs = [n for own, n in info["libs"] if own]
  assert scipy_libs and all(n >= 1 for n in scipy_libs)


def test_scipy_linalg_imported_first_gets_one_thread_and_numpy_keeps_its_own():
  info = _probe("import numpy, scipy.linalg")
  assert info["applied"] == "one_thread"
  assert [n for own, n in info["libs"] if own] == [1]
  others = [n for own, n in info["libs"] if not own]
  if others and (os.cpu_count() or 1) > 1:  # NumPy's own OpenBLAS keeps its thread count
    assert max(others) > 1


def test_opt_out_changes_nothing():
  info = _probe("import scipy.linalg", env={"TRANSRATE_JAX_LAPACK_THREADS": "keep"})
  assert info["applied"] == "keep"
  if (os.cpu_count() or 1) > 1:
    assert all(n > 1 for _, n in info["libs"])


def test_user_timeout_is_respected():
  info = _probe("", env={"OPENBLAS_THREAD_TIMEOUT": "8"})
  assert info["applied"] == "thread_timeout"
  assert info["timeout_env"] == "8"
