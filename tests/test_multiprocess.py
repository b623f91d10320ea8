"""``transrate_sharded`` across processes for real: ``jax.distributed`` on 127.0.0.1.

Two processes, each with 2 forced CPU devices (a 4-device mesh), each holding its own uneven share
of the rows (``process_local=True``), must give the score of one process holding every row, and
the float64 oracle. The processes are bounded in time and killed on failure.
"""

from __future__ import annotations

import json
import os
import pathlib
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

import reference
import transrate_jax as tj

_WORKER = pathlib.Path(__file__).with_name("_multiprocess_worker.py")
_PROCESSES = 2
_TIMEOUT_S = 240

sys.path.insert(0, str(_WORKER.parent))
import _multiprocess_worker as worker  # noqa: E402  pylint: disable=wrong-import-position


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.fixture(scope="module")
def results():
  env = dict(os.environ)
  env["PYTHONPATH"] = os.pathsep.join([str(_WORKER.parent.parent), env.get("PYTHONPATH", "")])
  env.pop("XLA_FLAGS", None)
  port = str(_free_port())
  procs = [subprocess.Popen([sys.executable, str(_WORKER), str(p), str(_PROCESSES), port],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
           for p in range(_PROCESSES)]
  outs = []
  deadline = time.monotonic() + _TIMEOUT_S  # one bound for all the processes together
  try:
    for p in procs:
      stdout, stderr = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
      assert p.returncode == 0, stderr[-3000:]
      outs.append(json.loads(stdout.strip().splitlines()[-1]))
  finally:
    for p in procs:
      if p.poll() is None:
        p.kill()
        p.wait()
  return outs


@pytest.mark.timeout(_TIMEOUT_S + 60)
def test_processes_form_one_mesh(results):
  for r in results:
    assert r["processes"] == _PROCESSES
    assert r["local_devices"] == 2 and r["devices"] == 2 * _PROCESSES


@pytest.mark.timeout(_TIMEOUT_S + 60)
def test_process_local_rows_give_the_one_process_score(results):
  for i, (n, d, c, preset, dtype, offset) in enumerate(worker.CASES):
    x, y, f64 = worker.data(n, d, c, dtype, offset, seed=i)
    single = float(tj.transrate(x, y, preset=preset))
    oracle = reference.transrate(f64, y, preset=preset)
    rows = [r["cases"][i]["rows"] for r in results]
    assert sum(rows) == n and len(set(rows)) > 1  # uneven shares that cover every row
    for r in results:
      case = r["cases"][i]
      assert case["dtype"] == dtype
      # Without num_classes the processes agree on C by an all-gather (the largest label is in
      # the last process's rows only).
      assert case["score"] == case["given_num_classes"]
      if dtype == "float64":
        np.testing.assert_allclose(case["score"], single, rtol=1e-10, err_msg=str((i, case)))
        np.testing.assert_allclose(case["score"], oracle, rtol=1e-10, err_msg=str((i, case)))
      else:  # float32 with a large common offset: the psum-ed shift keeps it accurate
        np.testing.assert_allclose(case["score"], oracle, rtol=1e-3, err_msg=str((i, case)))
    assert results[0]["cases"][i]["score"] == results[1]["cases"][i]["score"]
