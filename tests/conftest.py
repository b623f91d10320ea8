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

# Let tests import the oracles (tests/reference*.py) as plain modules.
sys.path.insert(0, os.path.dirname(__file__))

# Before JAX starts its CPU backend: LLVM code generation unoptimised in this process and its
# children (tests/codegen.py says why and how to run at JAX's default level).
import codegen  # noqa: E402

codegen.apply()

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)

_MAX_MAPPINGS = 25_000


@pytest.fixture(autouse=True)
def _release_compiled_programs():
  yield
  from transrate_jax._src import backend  # noqa: PLC0415
  got = backend.memory_mappings()  # None where /proc does not say (not Linux: no such cap)
  if got is not None and got[0] > _MAX_MAPPINGS:
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


def pytest_addoption(parser):
  parser.addoption(
      "--accelerator-rerun", action="store_true",
      help="leave out the tests the accelerator-branch rerun need not repeat: those marked "
      "both_branches (they run both branches themselves) or branch_free (tests/branch_reads.py)")


def pytest_collection_modifyitems(config, items):
  """Tests marked ``early`` (long subprocess runs) go first: under ``-n`` one worker runs them
  while the others take the rest, instead of the suite waiting on them at its end. Under
  ``--accelerator-rerun`` the tests that need no rerun are deselected."""
  if config.getoption("--accelerator-rerun"):
    import branch_reads  # noqa: PLC0415
    left_out = [item for item in items if item.get_closest_marker("both_branches")
                or branch_reads.marked_branch_free(item)]
    if left_out:
      config.hook.pytest_deselected(items=left_out)
      kept = set(map(id, left_out))
      items[:] = [item for item in items if id(item) not in kept]
  items.sort(key=lambda item: item.get_closest_marker("early") is None)


# A test marked branch_free is checked on every run (tests/branch_reads.py): its setup, call and
# teardown are recorded, and it fails if they read a branch of the backend policy. JAX's caches
# are cleared before it unless the test run just before it in this process was marked too.
_RECORDING = pytest.StashKey()
_previous_was_branch_free = [False]


def _branch_free_failure(reads, when):
  return (f"marked branch_free, but its {when} reads backend.policy().{sorted(reads)}: remove "
          "the mark (or narrow it) so that the accelerator-branch rerun covers this test")


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item):
  import branch_reads  # noqa: PLC0415
  free = branch_reads.marked_branch_free(item)
  clear = not _previous_was_branch_free[0]
  _previous_was_branch_free[0] = free
  if not free:
    return (yield)
  block = branch_reads.recording(clear=clear)
  item.stash[_RECORDING] = (block, block.__enter__())
  return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item):
  recorded = item.stash.get(_RECORDING, None)
  result = yield
  if recorded is not None and recorded[1]:
    pytest.fail(_branch_free_failure(recorded[1], "setup or call"), pytrace=False)
  return result


@pytest.hookimpl(wrapper=True)
def pytest_runtest_teardown(item, nextitem):  # pylint: disable=unused-argument
  recorded = item.stash.get(_RECORDING, None)
  if recorded is None:
    return (yield)
  block, reads = recorded
  before = set(reads)
  try:
    result = yield
  finally:
    del item.stash[_RECORDING]
    block.__exit__(None, None, None)
  if reads - before:
    _previous_was_branch_free[0] = False  # what the teardown traced is not known to be free
    raise RuntimeError(_branch_free_failure(reads - before, "teardown"))
  if reads:  # the test failed for its reads: the programs it traced may read a branch
    _previous_was_branch_free[0] = False
  return result
