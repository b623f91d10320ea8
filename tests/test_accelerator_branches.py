"""The branches GPUs and TPUs take, run on this CPU on every commit (transrate_jax/_src/backend.py).

``TRANSRATE_JAX_BRANCHES=accelerator`` makes the CPU take every branch a GPU or TPU takes (XLA
products and eigensolvers, batched ``vmap`` programs, no ``pure_callback``). The numerical suites
below run again in a separate pytest process under the switch, with the same tolerances; CI has no
GPU, so this is how the accelerator path is checked on every commit.
"""

import os
import subprocess
import sys

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


@pytest.mark.early
@pytest.mark.timeout(2400)
@pytest.mark.xdist_group("accelerator_branches")
def test_numerical_suites_pass_on_the_accelerator_branches():
  env = {**os.environ, backend.ENV_VAR: "accelerator"}
  proc = subprocess.run(
      [sys.executable, "-m", "pytest", "-q", "-n", "2", "-p", "no:cacheprovider",
       *NUMERICAL_SUITES], cwd=_ROOT, env=env, capture_output=True, text=True, timeout=2300)
  tail = proc.stdout[-6000:] + proc.stderr[-3000:]
  assert proc.returncode == 0, f"accelerator-branch run failed:\n{tail}"
  assert " passed" in proc.stdout and " failed" not in proc.stdout, tail
