"""The suite compiles with LLVM's code generation unoptimised (tests/codegen.py: it saves about a
third of the time XLA spends compiling); users run JAX's default level. This test scores every
registered metric in float32 (TransRate in float64 too), vmapped where the metric allows it,
and TransRate's loss and gradient in both dtypes, on both branch sets, at both levels: the two
agree to round-off, so what the rest of the suite checks at one level holds at the other.
TransRate is also checked against the float64 NumPy reference at the default level. The inputs
are the metric contract's (tests/test_metric_contract.py).
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import _codegen_worker as worker
import codegen
import reference
import test_metric_contract
from transrate_jax._src import registry

# Round-off of a handful of operations, amplified by a log-determinant or an iteration: far
# below any difference between candidates, far above what a change of level does.
RTOL = {"float32": 2e-4, "float64": 1e-9, "int": 1e-12}


@pytest.mark.both_branches
@pytest.mark.early
def test_scores_agree_at_the_default_code_generation_level():
  child = subprocess.Popen([sys.executable, worker.__file__], stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True, env=codegen.default_level_env())
  try:
    here = worker.compute()  # meanwhile, at the suite's level
    out, err = child.communicate(timeout=420)
  finally:
    child.kill()
  assert child.returncode == 0, err[-3000:]
  default = json.loads(out.strip().splitlines()[-1])
  assert codegen.FLAG in os.environ["XLA_FLAGS"]  # set by the conftest
  assert set(default) == set(here)
  names = {key.split("/")[1] for key in here}
  assert {"transrate", "logme", "leep", "transrate_loss"} <= names
  for key in sorted(here):
    dtype = key.split("/")[2]
    got, want = np.asarray(default[key]), np.asarray(here[key])
    assert np.all(np.isfinite(got)), key
    scale = np.max(np.abs(want)) if want.size else 0.0
    np.testing.assert_allclose(got, want, rtol=RTOL[dtype], atol=RTOL[dtype] * scale,
                               err_msg=key)
  want = reference.transrate(test_metric_contract._inputs(registry.get_metric("transrate"), k=1)[0],
                             test_metric_contract._labels())  # pylint: disable=protected-access
  for branches in ("cpu", "accelerator"):
    np.testing.assert_allclose(default[f"{branches}/transrate/float64"][0], want, rtol=1e-9)
    np.testing.assert_allclose(default[f"{branches}/transrate/float32"][0], want, rtol=2e-4)
