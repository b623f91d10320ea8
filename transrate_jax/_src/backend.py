"""The backend policy: every decision that depends on the platform, in one place.

Every module that takes a platform-dependent branch reads it from :func:`policy`, and nothing else
calls ``jax.default_backend()`` to choose a code path. The branches:

* ``host_linalg``: products and eigendecompositions of unbatched 2-D float arrays go to SciPy's
  BLAS/LAPACK on the host through ``jax.pure_callback`` (:func:`numerics.product_eigh`,
  :func:`numerics.product_spectrum`), and an eager TransRate forms its second moments by BLAS
  ``syrk`` on the host (``transrate.kernel.host_moments``). The CPU only.
* ``one_matrix_per_program``: the sweep scores a stack of feature matrices with one call of an
  unbatched program per matrix instead of one ``vmap``-ped program. The CPU only (it has no
  parallel lanes for a batch to fill).
* ``row_blocks``: LEEP gathers its per-row table entries by blocks of rows (cache-sized). The CPU
  only.
* ``host_ranks``: PARC ranks its dissimilarities by NumPy's sort on the host (XLA's CPU sort is
  about 50x slower). The CPU only.

  The two host branches return their results through ``jax.pure_callback``, and a callback may
  return float64 only where float64 is on for the whole process: JAX converts a callback's results
  to the dtypes of the thread that runs it, which on the CPU is often an XLA worker thread that
  does not see a thread-local ``with jax.enable_x64(True):`` block, so a float64 program traced in
  such a block fails ("Incorrect output dtype ... Expected: float64, Actual: float32").
  :func:`host_callback` answers for a dtype; a float64 program traced under a thread-local x64
  block takes the accelerator branch for that step instead (tested in
  ``tests/test_accelerator_branches.py``).
* ``sequential_lapack``: every LAPACK factorisation in a program is of one matrix
  (:mod:`transrate_jax._src.linalg`). Not a numerical branch: the XLA CPU runtime's property
  (see :mod:`linalg`), on whenever the platform is the CPU, also under the switch below.

**The switch.** ``TRANSRATE_JAX_BRANCHES=accelerator`` in the environment (read at each call of
:func:`policy`; a program already traced keeps the branches it was traced with), or :func:`accelerator_branches` as a context manager, makes the CPU take
exactly the branches a GPU or TPU takes: XLA products and eigensolvers, batched ``vmap``
programs, no ``pure_callback``, whole-array gathers and device sorts. CI runs the numerical test
suites both ways. ``TRANSRATE_JAX_BRANCHES=auto`` (or unset) is the default: each platform its
own branches.

**Memory mappings.** Linux caps the memory mappings of a process (``vm.max_map_count``, 65,530 by
default); every program XLA compiles holds some until JAX's caches are cleared, and at the cap
XLA's compiler fails ("LLVM compilation error: Cannot allocate memory") and the process dies with
no Python error. A long session that sweeps many metrics over many widths gets there (a
cross-task benchmark did, at about 32,000 mappings per image task).
:func:`relieve_mapping_pressure`, which each sweep calls before it scores and each capture
before it runs a model, frees JAX's compiled programs (``jax.clear_caches()``: later calls
compile again, with the same results) once :data:`MAPPING_FRACTION` of the cap is in use, and
says so in a ``RuntimeWarning``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import threading
import time
import warnings
from typing import Iterator, Optional, Tuple

import jax
import numpy as np

from transrate_jax._src import lapack_threads

ENV_VAR = "TRANSRATE_JAX_BRANCHES"
MODES = ("auto", "accelerator")


@dataclasses.dataclass(frozen=True)
class Policy:
  """The platform-dependent choices of one process (see the module docstring).

  Attributes:
    platform: ``jax.default_backend()``: "cpu", "gpu", "tpu", ...
    mode: "auto" (each platform its own branches) or "accelerator" (the switch).
    host_linalg: products and eigendecompositions by SciPy on the host (pure_callback).
    one_matrix_per_program: the sweep calls an unbatched program per matrix.
    row_blocks: LEEP gathers by blocks of rows.
    host_ranks: PARC ranks on the host.
    sequential_lapack: each LAPACK call in a program factorises one matrix.
  """
  platform: str
  mode: str
  host_linalg: bool
  one_matrix_per_program: bool
  row_blocks: bool
  host_ranks: bool
  sequential_lapack: bool

  @property
  def accelerator_branches(self) -> bool:
    """Whether the numerical branches are those of a GPU or TPU (on one, or under the switch)."""
    return not self.host_linalg


_forced: Optional[str] = None
_cache: dict = {}
# The mode accelerator_branches forces, in every jax.jit cache key (tracing, lowering and
# compilation): a program traced under one mode is never reused under the other, and each mode's
# programs stay cached across blocks. A JAX without jax.make_user_context clears its caches instead.
_forced_key = (jax.make_user_context(default_value=None) if hasattr(jax, "make_user_context")
               else None)


def _force(mode: Optional[str]) -> None:
  global _forced
  _forced = mode
  if _forced_key is None:
    jax.clear_caches()
  else:
    _forced_key.set_global(mode)


def _mode() -> str:
  if _forced is not None:
    return _forced
  mode = os.environ.get(ENV_VAR, "").strip().lower() or "auto"
  if mode not in MODES:
    raise ValueError(f"{ENV_VAR} must be one of {MODES}; got {mode!r}.")
  return mode


def policy() -> Policy:
  """The :class:`Policy` in force (decided once per platform and mode, then cached)."""
  platform = jax.default_backend()
  mode = _mode()
  key = (platform, mode)
  if key not in _cache:
    if platform == "cpu":
      # SciPy's OpenBLAS, which jaxlib's CPU factorisations call, set once per process before the
      # first factorisation (lapack_threads: what this changes, and how to opt out).
      lapack_threads.applied()
    cpu_branches = platform == "cpu" and mode == "auto"
    _cache[key] = Policy(platform=platform, mode=mode, host_linalg=cpu_branches,
                         one_matrix_per_program=cpu_branches, row_blocks=cpu_branches,
                         host_ranks=cpu_branches, sequential_lapack=platform == "cpu")
  return _cache[key]


def _x64_for_the_process() -> bool:
  """Whether float64 is on outside any thread-local ``jax.enable_x64`` block: the setting a thread
  that never entered one (an XLA worker running a callback) reads."""
  seen = []
  probe = threading.Thread(target=lambda: seen.append(bool(jax.config.jax_enable_x64)))
  probe.start()
  probe.join()
  return seen[0]


def host_callback(dtype) -> bool:
  """Whether a host branch (``host_linalg``, ``host_ranks``) may return ``dtype`` arrays through
  ``jax.pure_callback``: any float dtype but float64, and float64 only when ``jax_enable_x64``
  is on for the process, not just in this thread (see the module docstring). Read at trace time.
  """
  if np.dtype(dtype) != np.float64:
    return True
  return _x64_for_the_process()


@contextlib.contextmanager
def accelerator_branches(enabled: bool = True) -> Iterator[Policy]:
  """Within the block, the CPU takes the branches a GPU or TPU takes (``enabled=False``: its own).

  The forced mode is part of every ``jax.jit`` cache key (``jax.make_user_context``), in every
  thread: a program traced under one mode is not reused under the other, and each mode's programs
  stay cached for its next block (a JAX without ``make_user_context`` clears its caches on entry
  and exit instead). For tests; a process that should run this way throughout sets
  ``TRANSRATE_JAX_BRANCHES=accelerator`` instead.
  """
  previous = _forced
  _force("accelerator" if enabled else "auto")
  try:
    yield policy()
  finally:
    _force(previous)


# The share of vm.max_map_count in use at which relieve_mapping_pressure frees the compiled
# programs. Between two checks a process compiles what one sweep or one model's capture needs,
# and what it compiles outside them (probes, fine-tuning): the cross-task benchmark added 7,600
# mappings between two checks, so half the cap (32,000) is the headroom.
MAPPING_FRACTION = 0.5
_MAPPING_CHECK_INTERVAL_S = 1.0  # /proc/self/maps is read at most once a second
_mapping_lock = threading.Lock()
_last_mapping_check = -float("inf")


def memory_mappings() -> Optional[Tuple[int, int]]:
  """``(in use, cap)`` of this process's memory mappings; None where ``/proc`` does not say."""
  try:
    with open("/proc/self/maps", "rb") as f:
      used = f.read().count(b"\n")
    with open("/proc/sys/vm/max_map_count", encoding="ascii") as f:
      cap = int(f.read())
  except (OSError, ValueError):
    return None
  return used, cap


def relieve_mapping_pressure() -> bool:
  """Frees JAX's compiled programs when this process nears the kernel's cap on memory mappings.

  Reads :func:`memory_mappings` (at most once a second) and, when more than
  :data:`MAPPING_FRACTION` of ``vm.max_map_count`` is in use, calls ``jax.clear_caches()`` and
  warns (``RuntimeWarning``). Clearing changes no result: programs compile again on their next
  call. Without it XLA's compiler fails at the cap and the process dies.

  Returns:
    Whether it freed the programs.
  """
  global _last_mapping_check
  with _mapping_lock:
    now = time.monotonic()
    if now - _last_mapping_check < _MAPPING_CHECK_INTERVAL_S:
      return False
    _last_mapping_check = now
    got = memory_mappings()
    if got is None or got[0] <= MAPPING_FRACTION * got[1]:
      return False
    jax.clear_caches()
  used, cap = got
  warnings.warn(
      f"transrate_jax: this process held {used} of the {cap} memory mappings Linux allows it "
      "(vm.max_map_count); every compiled XLA program holds some, and at the cap XLA fails and "
      "the process dies. JAX's compiled programs were freed (jax.clear_caches()); later calls "
      "compile again. Call jax.clear_caches() between independent jobs, or raise the cap: "
      "sudo sysctl -w vm.max_map_count=262144.", RuntimeWarning, stacklevel=3)
  return True
