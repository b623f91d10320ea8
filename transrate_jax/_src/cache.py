"""Where transrate_jax caches things on disk, and JAX's persistent compilation cache.

One directory holds both the converted backbone weights (:mod:`transrate_jax.models`) and, when
enabled, XLA's compiled programs: ``$TRANSRATE_JAX_CACHE`` if set, else
``$XDG_CACHE_HOME/transrate_jax``, else ``~/.cache/transrate_jax``.
"""

from __future__ import annotations

import os
import pathlib
from typing import Optional

CACHE_ENV = "TRANSRATE_JAX_CACHE"


def cache_dir() -> pathlib.Path:
  """The cache directory (not created here).

  ``$TRANSRATE_JAX_CACHE`` if set, else ``$XDG_CACHE_HOME/transrate_jax``, else
  ``~/.cache/transrate_jax``.
  """
  if os.environ.get(CACHE_ENV):
    return pathlib.Path(os.environ[CACHE_ENV])
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return pathlib.Path(base) / "transrate_jax"


def enable_compilation_cache(path: Optional[str] = None, *,
                             min_compile_seconds: float = 0.0) -> pathlib.Path:
  """Turns on JAX's persistent compilation cache, so a second process does not compile again.

  One line in a notebook or script: ``tj.enable_compilation_cache()``. Every program that took at
  least ``min_compile_seconds`` to compile is written to ``path`` (default
  ``cache_dir() / "xla"``) and read back by later processes with the same jax/jaxlib version,
  backend and program. The command line (``transrate-jax score``, ``transrate-jax demo``) calls
  it; set ``TRANSRATE_JAX_COMPILATION_CACHE=0`` to opt out there. It sets JAX's global
  configuration (``jax_compilation_cache_dir``, ``jax_persistent_cache_min_compile_time_secs``),
  so it affects every JAX program of the process, which is what a user wants of it.

  Args:
    path: cache directory (created if missing).
    min_compile_seconds: programs that compile faster than this are not cached.

  Returns:
    The cache directory.
  """
  import jax  # noqa: PLC0415

  target = pathlib.Path(path) if path is not None else cache_dir() / "xla"
  target.mkdir(parents=True, exist_ok=True)
  jax.config.update("jax_compilation_cache_dir", str(target))
  jax.config.update("jax_persistent_cache_min_compile_time_secs", float(min_compile_seconds))
  jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
  return target
