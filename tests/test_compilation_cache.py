"""The persistent compilation cache (``tj.enable_compilation_cache``): a second process loads the
programs the first one compiled. Counted from JAX's monitoring events, not timed."""

from __future__ import annotations

import json
import subprocess
import sys

from transrate_jax._src import backend

_CHILD = r"""
import json, sys
import jax
hits = []
jax.monitoring.register_event_listener(
    lambda event, **_: hits.append(event) if event == "/jax/compilation_cache/cache_hits" else None)
import numpy as np
import transrate_jax as tj
path = tj.enable_compilation_cache(sys.argv[1])
rng = np.random.default_rng(0)
y = rng.integers(0, 3, 64)
layers = {"a": rng.normal(size=(64, 8)).astype(np.float32),
          "b": rng.normal(size=(64, 200)).astype(np.float32)}
scores = tj.transrate_many(layers, y, progress=False)
print(json.dumps({"hits": len(hits), "files": sum(1 for _ in path.iterdir()),
                  "scores": {k: float(v) for k, v in scores.items()}}))
"""


def _run(cache_dir) -> dict:
  proc = subprocess.run([sys.executable, "-c", _CHILD, str(cache_dir)], capture_output=True,
                        text=True, timeout=240, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return json.loads(proc.stdout.strip().splitlines()[-1])


def test_second_process_reads_the_cache(tmp_path):
  first = _run(tmp_path / "xla")
  assert first["hits"] == 0 and first["files"] > 0  # compiled and written
  second = _run(tmp_path / "xla")
  # Every program the first process wrote came back from the cache: on the CPU branches the one
  # small assembly program of the eager sweep (the products and factorisations run on the host,
  # for both widths), on the accelerator branches one program per width bucket.
  assert second["hits"] == first["files"]
  assert second["hits"] >= (1 if backend.policy().host_linalg else 2)
  assert second["scores"] == first["scores"]
