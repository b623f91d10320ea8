"""transrate_sharded on 8 forced CPU devices (a subprocess: XLA_FLAGS must precede jax's import)."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

_WORKER = pathlib.Path(__file__).with_name("_sharding_worker.py")
# One worker runs this file, so its module fixture (the subprocess) starts once under -n.
pytestmark = pytest.mark.xdist_group("sharding")


@pytest.fixture(scope="module")
def results():
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(_WORKER.parent.parent), env.get("PYTHONPATH", "")])
  proc = subprocess.run([sys.executable, str(_WORKER)], capture_output=True, text=True,
                        timeout=240, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_eight_devices(results):
  assert results["devices"] == 8


@pytest.mark.timeout(300)
def test_sharded_equals_single_device(results):
  for case in results["cases"]:
    assert case["num_shards"] == 8  # the result is replicated over the mesh
    assert case["sharded_dtype"] == case["dtype"]
    if case["dtype"] == "float64":
      np.testing.assert_allclose(case["sharded"], case["single"], rtol=1e-10, err_msg=str(case))
      np.testing.assert_allclose(case["sharded"], case["oracle"], rtol=1e-10, err_msg=str(case))
    else:  # large common offset, float32: centred with the psum-ed mean before second moments
      np.testing.assert_allclose(case["sharded"], case["oracle"], rtol=1e-3, err_msg=str(case))
      np.testing.assert_allclose(case["sharded"], case["single"], rtol=1e-3, err_msg=str(case))


def test_uneven_rows_are_covered(results):
  assert any(case["n"] % 8 for case in results["cases"])
  assert any(case["n"] < 16 for case in results["cases"])  # some devices hold only padding
