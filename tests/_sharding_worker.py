"""Run by tests/test_sharding.py in a subprocess with 8 forced CPU devices.

XLA_FLAGS must be set before jax is imported, so this runs as its own process. It prints one JSON
line: for each case, the sharded score, the single-device in-memory score and the float64 oracle.
"""

import json
import os
import sys

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                           + " --xla_force_host_platform_device_count=8")

import jax  # pylint: disable=g-import-not-at-top,wrong-import-position

jax.config.update("jax_enable_x64", True)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

sys.path.insert(0, os.path.dirname(__file__))
import reference  # pylint: disable=g-import-not-at-top,wrong-import-position
from transrate_jax._src import sharding  # pylint: disable=g-import-not-at-top,wrong-import-position
from transrate_jax._src import transrate as transrate_lib  # pylint: disable=wrong-import-position


def main():
  out = {"devices": jax.device_count(), "cases": []}
  rng = np.random.default_rng(3)
  mesh = sharding.default_mesh()
  # n = 203 and 13 are not multiples of 8 (uneven rows per device; 13 leaves some devices nearly
  # empty); 256 is even. The last case has a large common offset in float32.
  for n, d, c, preset, dtype, offset in [
      (256, 12, 4, "tllib", np.float64, 0.0),
      (203, 12, 4, None, np.float64, 0.0),
      (203, 9, 3, "official", np.float64, 0.0),
      (13, 5, 3, None, np.float64, 0.0),
      (203, 12, 4, None, np.float32, 1e4),
  ]:
    y = rng.integers(0, c, n)
    f = rng.normal(size=(n, d)) + 2.0 * np.eye(d)[y % d]
    x = (f + offset).astype(dtype)
    sharded = sharding.transrate_sharded(x, y, mesh=mesh, preset=preset)
    single = transrate_lib.transrate(x, y, preset=preset)
    out["cases"].append({
        "n": n, "d": d, "preset": preset, "dtype": np.dtype(dtype).name,
        "sharded": float(sharded), "single": float(single),
        "oracle": float(reference.transrate(f, y, preset=preset)),
        "sharded_dtype": str(sharded.dtype),
        "num_shards": len(sharded.sharding.device_set),
    })
  print(json.dumps(out))


if __name__ == "__main__":
  main()
