"""Test configuration: float64 is enabled for the whole session.

Float32 behaviour is tested with explicit float32 inputs (the package keeps the input dtype).

Every program XLA compiles for the CPU lives in about three memory mappings until JAX's caches
let go of it, and Linux caps a process at ``vm.max_map_count`` mappings (65530 by default). One
pytest process compiles thousands of programs (every shape a property test draws), so past the
cap the next compilation segfaults inside XLA. After each test, when the process holds more than
``_MAX_MAPPINGS`` mappings, the JAX caches are cleared (programs are then compiled again on
demand; no result changes).
"""

import gc
import os
import sys

import jax
import pytest

jax.config.update("jax_enable_x64", True)

# Let tests import the oracles (tests/reference*.py) as plain modules.
sys.path.insert(0, os.path.dirname(__file__))

_MAPS = "/proc/self/maps"
_MAX_MAPPINGS = 25_000


def _mappings() -> int:
  try:
    with open(_MAPS, "rb") as f:
      return sum(1 for _ in f)
  except OSError:  # not Linux: no such cap to stay under
    return 0


@pytest.fixture(autouse=True)
def _release_compiled_programs():
  yield
  if _mappings() > _MAX_MAPPINGS:
    jax.clear_caches()
    gc.collect()


@pytest.fixture(scope="module")
def weight_cache(tmp_path_factory):
  """A private weight cache for one test module (``$TRANSRATE_JAX_CACHE``): converted weights go
  there, never to the user's cache. Yields its path."""
  from transrate_jax._src import cache  # noqa: PLC0415
  path = tmp_path_factory.mktemp("weights")
  with pytest.MonkeyPatch.context() as mp:
    mp.setenv(cache.CACHE_ENV, str(path))
    yield path


def pytest_collection_modifyitems(config, items):  # pylint: disable=unused-argument
  """Tests marked ``early`` (long subprocess runs) go first: under ``-n`` one worker runs them
  while the others take the rest, instead of the suite waiting on them at its end."""
  items.sort(key=lambda item: item.get_closest_marker("early") is None)
