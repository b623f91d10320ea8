"""The branches GPUs and TPUs take, run on this CPU on every commit (transrate_jax/_src/backend.py).

``TRANSRATE_JAX_BRANCHES=accelerator`` makes the CPU take every branch a GPU or TPU takes (XLA
products and eigensolvers, batched ``vmap`` programs, no ``pure_callback``). The numerical suites
below run again in a separate pytest process under the switch, with the same tolerances; CI has no
GPU, so this is how the accelerator path is checked on every commit. Tests marked ``both_branches``
already run each branch themselves in the main session; the rerun leaves them out.
"""

import os
import subprocess
import sys
import warnings

import jax
import numpy as np
import pytest

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


@pytest.mark.early
@pytest.mark.timeout(2400)
@pytest.mark.xdist_group("accelerator_branches")
def test_numerical_suites_pass_on_the_accelerator_branches():
  env = {**os.environ, backend.ENV_VAR: "accelerator"}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
       "-m", "not both_branches", *NUMERICAL_SUITES],
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
