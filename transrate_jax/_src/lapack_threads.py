"""Keeps the LAPACK behind JAX's CPU factorisations from slowing down the matmuls around them.

jaxlib runs ``cholesky``, ``eigh``, ``svd``... on the CPU through ``scipy.linalg.cython_lapack``,
that is, through the OpenBLAS bundled in SciPy's wheel. After each call OpenBLAS's worker threads
keep spinning (busy-waiting, by default for about 2^28 cycles) and compete with XLA's own thread
pool for the same cores: the next XLA matmul runs about twice as slow. Measured here (2 cores,
jax 0.10.2, ``benchmarks/bench_cpu.py``): a ``10000 x 512`` ``Z^T Z`` (31 ms alone) followed by a
512 x 512 Cholesky took 61.7 ms per round, 39.1 ms with the policy below.

Nothing happens at ``import transrate_jax``. The first call of a library function on the CPU
backend (when :func:`backend.policy` is first read there) applies, once per process, what
:func:`applied` describes:

* if SciPy's OpenBLAS is not loaded yet (the usual case: ``import jax`` does not load it), loads
  it with ``OPENBLAS_THREAD_TIMEOUT=18`` (its threads sleep about 2^18 cycles, ~0.1 ms, after
  each call; the variable is read once, at load; the process environment is restored
  afterwards). LAPACK keeps every core, which ``eigh`` uses (2048 x 2048: 0.61 s on 2 threads,
  0.85 s on 1). The timeout is short enough that the threads are asleep before the next XLA
  matmul (the round above: 34-37 ms with 18 as with 4), and long enough that they stay awake
  across the back-to-back calls of a batched factorisation: with 4 (2^4 cycles) each of the
  LAPACK calls inside had to wake them, and a batched Cholesky of [10, 256, 256] took 5-70 ms
  from one run to the next instead of 5 ms;
* if it is already loaded (SciPy's ``linalg`` imported before ``transrate_jax``), sets its thread
  count to 1 instead (with ``threadpoolctl``): no worker threads, so nothing spins.

Only SciPy's own bundled OpenBLAS is concerned: NumPy's, which ``numpy.linalg`` and user code use,
is a separate library and is left alone, as is a SciPy linked to a system BLAS. Set the environment
variable ``TRANSRATE_JAX_LAPACK_THREADS=keep`` before the first call to change nothing. What a call
changes is then exactly this: SciPy's OpenBLAS loaded with the 0.1 ms thread timeout (the process
environment restored), or, when it was loaded already, its thread count set to 1 (what
``threadpoolctl.threadpool_info()`` shows).
"""

from __future__ import annotations

import os
import sys

ENV_VAR = "TRANSRATE_JAX_LAPACK_THREADS"
_TIMEOUT_VAR = "OPENBLAS_THREAD_TIMEOUT"


def _scipy_blas_controllers():
  """threadpoolctl controllers of the BLAS libraries bundled with SciPy that are loaded now."""
  import scipy  # pylint: disable=g-import-not-at-top
  from threadpoolctl import ThreadpoolController  # pylint: disable=g-import-not-at-top
  # Wheels put the library beside the package (scipy.libs/) or inside it (scipy/.dylibs/).
  root = os.path.dirname(os.path.abspath(scipy.__file__))
  return [lib for lib in ThreadpoolController().lib_controllers
          if lib.user_api == "blas" and os.path.abspath(lib.filepath or "").startswith(root)]


def configure() -> str:
  """Applies the policy above once; returns what was done (for tests and bug reports).

  Returns:
    ``"thread_timeout"``, ``"one_thread"``, ``"keep"`` (opted out) or ``"unavailable"`` (SciPy or
    threadpoolctl missing, or SciPy on a system BLAS).
  """
  if os.environ.get(ENV_VAR, "").strip().lower() == "keep":
    return "keep"
  try:
    controllers = _scipy_blas_controllers()
  except ImportError:
    return "unavailable"
  if not controllers and "scipy.linalg.cython_lapack" not in sys.modules:
    previous = os.environ.get(_TIMEOUT_VAR)
    os.environ.setdefault(_TIMEOUT_VAR, "18")
    try:
      import scipy.linalg.cython_lapack  # noqa: F401  pylint: disable=g-import-not-at-top,unused-import
    finally:
      if previous is None:
        del os.environ[_TIMEOUT_VAR]
    return "thread_timeout" if _scipy_blas_controllers() else "unavailable"
  for lib in controllers:
    lib.set_num_threads(1)
  return "one_thread" if controllers else "unavailable"


_applied = None


def applied() -> str:
  """Applies :func:`configure` the first time it is called in a process; what it did (cached)."""
  global _applied
  if _applied is None:
    _applied = configure()
  return _applied


def current():
  """What was applied so far: None before the first library call on the CPU, else the policy."""
  return _applied
