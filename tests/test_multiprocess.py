"""Scores across processes for real: ``jax.distributed`` on 127.0.0.1.

Two processes, each with 2 forced CPU devices (a 4-device mesh), each holding its own uneven share
of the rows (``process_local=True``), must give the score of one process holding every row, and
the float64 oracle: ``transrate_sharded``, and streaming (``transrate_from_batches`` and
``TransRateStats.merge_across_processes``, each process in chunks of its own sizes). The same two
processes run every case; they are bounded in time and killed on failure.
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
# One worker runs this file, so its module fixture (the processes) starts once under -n.
pytestmark = pytest.mark.xdist_group("multiprocess")
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


@pytest.mark.timeout(_TIMEOUT_S + 60)
def test_streamed_process_local_rows_give_the_one_process_score(results):
  for i in worker.STREAMED:
    n, d, c, preset, dtype, offset = worker.CASES[i]
    _, y, f64 = worker.data(n, d, c, dtype, offset, seed=i)
    oracle = reference.transrate(f64, y, preset=preset)
    keys = ["streamed_given"] + (["streamed", "method"] if i == 0 else [])
    # Each process streams its own chunk sizes; the class c - 1 is on the last process only.
    assert results[0]["cases"][i]["chunks"][:2] != results[1]["cases"][i]["chunks"][:2]
    assert len(set(results[0]["cases"][i]["chunks"] + results[1]["cases"][i]["chunks"])) > 2
    for r in results:
      case = r["cases"][i]
      one = case["one"]  # this process alone, streaming every row
      np.testing.assert_allclose(one, oracle, rtol=1e-10 if dtype == "float64" else 1e-4)
      assert case["streamed_dtype"] == dtype
      # float32, a 1e4 common offset and different shifts per process: 1e-5 measured.
      rtol = 1e-10 if dtype == "float64" else 1e-4
      for key in keys:
        np.testing.assert_allclose(case[key], one, rtol=rtol, err_msg=str((i, key, case)))
        np.testing.assert_allclose(case[key], oracle, rtol=rtol, err_msg=str((i, key, case)))
      if i == 0:
        assert case["method_n"] == n
      if preset != "official":
        # Without the merge, a process's own rows score differently: the test can fail.
        assert abs(case["local_only"] - oracle) > 1e-2 * abs(oracle), (i, case)
    for key in keys:  # the same value on every process
      assert results[0]["cases"][i][key] == results[1]["cases"][i][key]


@pytest.mark.timeout(_TIMEOUT_S + 60)
def test_streaming_errors_reach_every_process(results):
  n, d, c, _, dtype, offset = worker.CASES[0]
  _, y, f64 = worker.data(n, d, c, dtype, offset, seed=0)
  for r in results:  # a disagreement raises the same error everywhere (no process left waiting)
    kind, msg = r["errors"]["shapes"]
    assert kind == "ValueError" and f"C={c}," in msg and f"C={c + 1}," in msg, msg
    kind, msg = r["errors"]["widths"]
    assert kind == "ValueError" and f"d={d}," in msg and f"d={d - 1}," in msg, msg
  kind, msg = results[1]["errors"]["failure"]  # process 1's chunks hold NaN
  assert kind == "ValueError" and "NaN" in msg, msg
  kind, msg = results[0]["errors"]["failure"]
  assert kind == "RuntimeError" and "[1]" in msg, msg
  # Process 0 streams nothing: the score is that of process 1's rows.
  lo, hi = worker.shares(n, _PROCESSES)[1]
  for r in results:
    np.testing.assert_allclose(r["errors"]["empty_here"], reference.transrate(f64[lo:hi], y[lo:hi]),
                               rtol=1e-10)
