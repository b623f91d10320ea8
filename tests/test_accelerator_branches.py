"""The branches GPUs and TPUs take, run on this CPU on every commit (transrate_jax/_src/backend.py).

``TRANSRATE_JAX_BRANCHES=accelerator`` makes the CPU take every branch a GPU or TPU takes (XLA
products and eigensolvers, batched ``vmap`` programs, no ``pure_callback``). The numerical suites
below run again in a separate pytest process under the switch, with the same tolerances; CI has no
GPU, so this is how the accelerator path is checked on every commit. The rerun
(``--accelerator-rerun``, tests/conftest.py) leaves out the tests that cannot differ there: those
marked ``both_branches`` run each branch themselves in the main session, and those marked
``branch_free`` read no platform branch of the policy, so they run the same programs either way
(the mark is checked on every run: ``tests/branch_reads.py``).
"""

import concurrent.futures
import dataclasses
import os
import re
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

import branch_reads
import transrate_jax as tj
from transrate_jax._src import backend

# Parity with the public code, float32 properties, the metric contract, the regularizer's
# gradients, sweeps, streaming, sharding.
NUMERICAL_SUITES = (
    "tests/test_transrate_reference.py",
    "tests/test_float32.py",
    "tests/test_metric_contract.py",
    "tests/test_regularizer.py",
    "tests/test_sweep.py",
    "tests/test_streaming.py",
    "tests/test_sharding.py",
    "tests/test_hscore.py",
    "tests/test_logme.py",
    "tests/test_parc.py",
    "tests/test_leep.py",
    "tests/test_hscore_float32.py",
)

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_switch_selects_the_accelerator_branches():
  assert backend.policy().host_linalg == (jax.default_backend() == "cpu")
  with backend.accelerator_branches() as forced:
    assert forced.mode == "accelerator"
    assert not (forced.host_linalg or forced.one_matrix_per_program or forced.row_blocks
                or forced.host_ranks)
    assert forced.sequential_lapack == (jax.default_backend() == "cpu")
    # The same numbers either way (the branches differ in where they run, not in what).
    rng = np.random.default_rng(0)
    f = rng.normal(size=(300, 20)).astype(np.float32)
    y = np.arange(300) % 4
    accelerator = float(tj.logme(f, y)), float(tj.transrate(f, y)), float(tj.parc(f, y))
  cpu = float(tj.logme(f, y)), float(tj.transrate(f, y)), float(tj.parc(f, y))
  # PARC ranks a float32 correlation matrix formed on different paths: ranks of near-ties may
  # swap, 3e-5 of the score measured; LogME and TransRate agree to 2e-6.
  np.testing.assert_allclose(accelerator, cpu, rtol=1e-4)


def test_unknown_mode_is_refused(monkeypatch):
  monkeypatch.setenv(backend.ENV_VAR, "tpu-please")
  with pytest.raises(ValueError, match=backend.ENV_VAR):
    backend.policy()


def test_tests_left_out_of_the_rerun_run_both_branches_themselves():
  """A ``both_branches`` test is parametrized over ``branches`` = cpu, accelerator (and enters
  ``backend.accelerator_branches``), so leaving it out of the rerun loses no accelerator check."""
  marked = 0
  for suite in NUMERICAL_SUITES:
    text = open(os.path.join(_ROOT, suite), encoding="utf-8").read()
    for block in text.split("@pytest.mark.both_branches\n")[1:]:
      head = block.split("\ndef ", 1)
      body = head[1].split("\n\n\n", 1)[0]
      assert "@pytest.mark.parametrize(\"branches\"" in head[0], (suite, head[0][:200])
      assert "accelerator_branches(branches == \"accelerator\")" in body, (suite, body[:200])
      marked += 1
  assert marked >= 5


def test_only_the_branches_differ_between_the_modes():
  """The switch changes the attributes ``branch_reads`` records and no other."""
  with backend.accelerator_branches(False) as auto:
    pass
  with backend.accelerator_branches(True) as forced:
    pass
  for name in branch_reads.MODE_INDEPENDENT:
    assert getattr(auto, name) == getattr(forced, name), name
  if jax.default_backend() == "cpu":  # elsewhere the two modes are the same policy
    differ = {f.name for f in dataclasses.fields(backend.Policy)
              if getattr(auto, f.name) != getattr(forced, f.name)}
    assert differ == {"mode", "host_linalg", "one_matrix_per_program", "row_blocks",
                      "host_ranks"}


def test_each_mode_keeps_its_own_programs():
  """A program traced under one mode is never reused under the other, in any thread, and each
  mode's program is traced once across blocks (the mode is in the jit cache key; no clearing)."""
  traces = []

  def branch(x):
    traces.append(backend.policy().mode)
    return x + (1.0 if backend.policy().host_linalg else 2.0)

  f = jax.jit(branch)

  def in_thread():
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
      return float(pool.submit(f, 0.0).result())

  outside = 1.0 if backend.policy().host_linalg else 2.0
  for _ in range(2):
    assert float(f(0.0)) == outside
    with backend.accelerator_branches():
      assert float(f(0.0)) == 2.0 and in_thread() == 2.0
    assert float(f(0.0)) == outside and in_thread() == outside
  assert sorted(traces) == sorted([backend.policy().mode, "accelerator"]), traces


def test_without_user_contexts_the_block_clears_the_caches(monkeypatch):
  """A JAX without ``jax.make_user_context``: the block clears JAX's caches on entry and exit."""
  monkeypatch.setattr(backend, "_forced_key", None)
  cleared = []
  clear = jax.clear_caches
  monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1) or clear())
  f = jax.jit(lambda x: x + (1.0 if backend.policy().host_linalg else 2.0))
  outside = float(f(0.0))
  with backend.accelerator_branches():
    assert float(f(0.0)) == 2.0
  assert float(f(0.0)) == outside and len(cleared) == 2


def test_branch_reads_are_recorded_also_for_programs_traced_before():
  rng = np.random.default_rng(0)
  y = np.arange(120) % 3
  f = (rng.normal(size=(120, 8)) + np.eye(8)[y]).astype(np.float32)
  logme = jax.jit(lambda x: tj.logme(x, y, num_classes=3))
  before = float(logme(f))  # traced here, outside the block
  with branch_reads.recording() as reads:
    assert float(logme(f)) == before  # traced again inside: JAX's caches were cleared
  assert reads == {"host_linalg"}
  with branch_reads.recording() as reads:
    tj.nce(y[::-1].copy(), y)
  assert not reads
  with branch_reads.recording():
    with pytest.raises(RuntimeError, match="branch_free may not start a process"):
      subprocess.run([sys.executable, "-c", "pass"], check=True)
  assert subprocess.run([sys.executable, "-c", "pass"], check=True).returncode == 0


_MARKED = """
import jax
import numpy as np
import pytest
import transrate_jax as tj

Y = np.arange(60) % 3
F = np.random.default_rng(0).normal(size=(60, 5)).astype(np.float32)
LOGME = jax.jit(lambda f: tj.logme(f, Y, num_classes=3))

@pytest.mark.branch_free(metric=("nce",))
@pytest.mark.parametrize("metric", ["nce", "transrate"])
def test_marked(metric):
  if metric == "nce":
    tj.nce(Y, Y)
  else:
    tj.transrate(F, Y)

@pytest.mark.branch_free
def test_marked_but_reads_a_branch():
  tj.transrate(F, Y)

def test_traces_a_program_that_reads_a_branch():
  LOGME(F)

@pytest.mark.branch_free
def test_marked_and_runs_that_program_traced_before():
  LOGME(F)
"""


def test_a_wrong_branch_free_mark_fails_and_the_rerun_leaves_marked_tests_out(tmp_path):
  """Through pytest itself, with tests/conftest.py as a plugin: a mark narrowed to parameters
  holds for those only, a wrong mark fails its test (also when the program that reads the branch
  was traced by an earlier test), and ``--accelerator-rerun`` deselects the marked tests."""
  (tmp_path / "test_marked.py").write_text(_MARKED)
  tests = os.path.join(_ROOT, "tests")
  env = dict(os.environ, PYTHONPATH=os.pathsep.join(
      p for p in (tests, os.environ.get("PYTHONPATH")) if p))
  base = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "conftest", "-p", "no:cacheprovider",
          "-o", "addopts=", "-o", "markers=branch_free", "--rootdir", str(tmp_path),
          str(tmp_path / "test_marked.py")]
  done = subprocess.run(base, env=env, capture_output=True, text=True, timeout=300)
  out = done.stdout
  assert done.returncode == 1 and "2 failed, 3 passed" in out, out[-3000:]
  message = (r" _+\nmarked branch_free, but its setup or call reads "
             r"backend.policy\(\).\['host_linalg'\]: remove the mark")
  for line in (r"PASSED \S*::test_marked\[nce\]", r"PASSED \S*::test_marked\[transrate\]",
               r"FAILED \S*::test_marked_but_reads_a_branch",
               r"_ test_marked_but_reads_a_branch" + message,
               r"PASSED \S*::test_traces_a_program_that_reads_a_branch",
               r"FAILED \S*::test_marked_and_runs_that_program_traced_before",
               r"_ test_marked_and_runs_that_program_traced_before" + message):
    assert re.search(line, out), (line, out[-3000:])
  done = subprocess.run(base + ["--accelerator-rerun"], env=env, capture_output=True, text=True,
                        timeout=300)
  out = done.stdout
  assert done.returncode == 0 and "2 passed, 3 deselected" in out, out[-3000:]
  assert re.search(r"PASSED \S*::test_marked\[transrate\]", out), out[-3000:]


@pytest.mark.early
@pytest.mark.timeout(2400)
@pytest.mark.xdist_group("accelerator_branches")
def test_numerical_suites_pass_on_the_accelerator_branches():
  env = {**os.environ, backend.ENV_VAR: "accelerator"}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
       "--accelerator-rerun", *NUMERICAL_SUITES],
      cwd=_ROOT, env=env, capture_output=True, text=True, timeout=2300)
  tail = proc.stdout[-6000:] + proc.stderr[-3000:]
  assert proc.returncode == 0, f"accelerator-branch run failed:\n{tail}"
  assert " passed" in proc.stdout and " failed" not in proc.stdout, tail



_THREAD_LOCAL_X64 = """
import concurrent.futures
import jax
import numpy as np
import transrate_jax as tj
from transrate_jax._src import backend

assert not jax.config.jax_enable_x64
rng = np.random.default_rng(0)
x = rng.normal(size=(3000, 64))
y = np.arange(3000) % 4
x[:, 0] += 0.5 * y
names = ("logme", "hscore", "parc", "transrate")
reference = [float(getattr(tj, name)(x.astype(np.float32), y)) for name in names]

def score_in_block():
  with jax.enable_x64(True):
    assert not backend.host_callback(np.float64) and backend.host_callback(np.float32)
    got = [getattr(tj, name)(x, y) for name in names]
    assert all(g.dtype == np.float64 for g in got)
    return [float(g) for g in got]

on_worker = concurrent.futures.ThreadPoolExecutor(max_workers=1).submit(score_in_block).result()
for got in (score_in_block(), on_worker):
  np.testing.assert_allclose(got, reference, rtol=1e-4)
assert backend.host_callback(np.float32) and not backend.host_callback(np.float64)
with jax.enable_x64(True):
  jax.config.update("jax_enable_x64", True)  # on for the process: the host branches again
  assert backend.host_callback(np.float64)
print("ok")
"""


@pytest.mark.timeout(600)
def test_float64_in_a_thread_local_x64_block():
  """``with jax.enable_x64(True):`` is thread-local, and an XLA worker thread runs host callbacks
  and converts their results to its own dtypes (float32): a float64 program traced in such a
  block must not return float64 through a callback. LogME, H-score and PARC failed with
  "Incorrect output dtype" in the demo's scoring thread (4 of 12 calls at this size, whose
  programs run asynchronously, before the fix). Run in a process with float64 off (the tests
  turn it on), on the caller's thread and on a worker's."""
  env = dict(os.environ, JAX_ENABLE_X64="0", JAX_PLATFORMS="cpu")
  done = subprocess.run([sys.executable, "-c", _THREAD_LOCAL_X64], cwd=_ROOT, env=env,
                        capture_output=True, text=True, timeout=540)
  assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]


def test_memory_mappings_are_read_from_proc():
  got = backend.memory_mappings()
  if got is None:
    pytest.skip("no /proc/self/maps or vm.max_map_count here (not Linux)")
  used, cap = got
  assert 0 < used < cap


@pytest.fixture
def mapping_check(monkeypatch):
  """``set(used, cap)`` fakes the process's memory mappings; clear_caches calls are counted."""
  cleared = []
  monkeypatch.setattr(jax, "clear_caches", lambda: cleared.append(1))

  def fake(used_cap):
    monkeypatch.setattr(backend, "memory_mappings", lambda: used_cap)
    monkeypatch.setattr(backend, "_last_mapping_check", -float("inf"))  # the next call checks
  return fake, cleared


def test_mapping_pressure_frees_the_compiled_programs_with_a_warning(mapping_check):
  fake, cleared = mapping_check
  for used_cap in ((1000, 65530), (32000, 65530), None):  # below half the cap, or not Linux
    fake(used_cap)
    with warnings.catch_warnings():
      warnings.simplefilter("error")
      assert not backend.relieve_mapping_pressure()
  assert not cleared
  fake((50000, 65530))
  with pytest.warns(RuntimeWarning, match=r"held 50000 of the 65530 .*vm.max_map_count"):
    assert backend.relieve_mapping_pressure()
  assert cleared == [1]
  assert not backend.relieve_mapping_pressure()  # checked at most once a second
  assert cleared == [1]


def test_a_sweep_near_the_mapping_cap_frees_programs_and_scores_the_same(mapping_check):
  fake, cleared = mapping_check
  rng = np.random.default_rng(0)
  y = np.arange(200) % 4
  feats = {"a": rng.normal(size=(200, 12)) + np.eye(12)[y], "b": rng.normal(size=(200, 20))}
  fake((1000, 65530))
  calm = tj.score_many("transrate", feats, y)
  fake((64000, 65530))
  with pytest.warns(RuntimeWarning, match="vm.max_map_count"):
    pressed = tj.score_many("transrate", feats, y)
  assert cleared == [1]
  for k in feats:
    np.testing.assert_array_equal(np.asarray(pressed[k]), np.asarray(calm[k]))


def test_a_set_level_score_near_the_mapping_cap_frees_programs_too(mapping_check):
  """ETran and NCTI score a candidate set through their set-level scorer, not ``score_many``:
  that path checks the process's mappings as well."""
  from transrate_jax._src import selection  # noqa: PLC0415
  fake, cleared = mapping_check
  rng = np.random.default_rng(1)
  y = np.arange(120) % 3
  feats = {"a": rng.normal(size=(120, 6)) + 2 * np.eye(6)[y], "b": rng.normal(size=(120, 6))}
  score = lambda: selection.score_features(feats, y, metrics=("etran",), progress=False)
  fake((1000, 65530))
  calm = score().scores["etran"]
  assert not cleared
  fake((64000, 65530))
  with pytest.warns(RuntimeWarning, match="vm.max_map_count"):
    pressed = score().scores["etran"]
  assert cleared == [1]
  np.testing.assert_array_equal(pressed, calm)
