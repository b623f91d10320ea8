"""Every registered metric and TransRate's loss on one small problem, under both branch sets.

Imported by tests/test_codegen_level.py, which computes these values in the test process (LLVM
code generation at the level tests/conftest.py sets) and runs this file as a child at JAX's
default level; the child prints one JSON line.
"""

import json

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # pylint: disable=g-import-not-at-top,wrong-import-position

from transrate_jax._src import backend  # pylint: disable=g-import-not-at-top
from transrate_jax._src import registry  # pylint: disable=g-import-not-at-top
from transrate_jax._src import regularizer  # pylint: disable=g-import-not-at-top
from test_metric_contract import _inputs, _labels, C, CS  # pylint: disable=g-import-not-at-top

# The metric contract's inputs (tests/test_metric_contract.py): each family's, for its labels.
STACK = 3


def compute() -> dict:
  """``{"<branches>/<metric>/<dtype>": [scores]}``, and TransRate's loss and gradient.

  Float32 for every metric (where a change of round-off would show first), float64 too for
  TransRate. A vmappable metric is scored on a stack of three inputs by one ``jit(vmap)``
  program; the others eagerly on the first.
  """
  y = _labels()
  out = {}
  for accelerator in (False, True):
    with backend.accelerator_branches(accelerator):
      branches = "accelerator" if accelerator else "cpu"
      for name in registry.registered_metrics():
        spec = registry.get_metric(name)
        stack = _inputs(spec, k=STACK)
        dtypes = ((None,) if spec.consumes == "source_labels" else
                  (np.float32, np.float64) if name == "transrate" else (np.float32,))
        for dtype in dtypes:
          xs = stack if dtype is None else stack.astype(dtype)
          key = f"{branches}/{name}/{'int' if dtype is None else np.dtype(dtype).name}"
          if spec.vmappable:
            kw = {"num_classes": C}
            if "num_source_classes" in spec.options:
              kw["num_source_classes"] = CS
            batched = jax.jit(jax.vmap(lambda a, spec=spec, kw=kw: spec.fn(a, y, **kw)))
            out[key] = np.asarray(batched(xs)).tolist()
          else:
            out[key] = [float(spec.fn(xs[0], y))]
      for dtype in (np.float32, np.float64):
        f = _inputs(registry.get_metric("transrate"), seed=2).astype(dtype)
        value, grad = jax.jit(jax.value_and_grad(
            lambda a: regularizer.transrate_loss(a, y, num_classes=C)))(f)
        out[f"{branches}/transrate_loss/{np.dtype(dtype).name}"] = [float(value)]
        out[f"{branches}/transrate_loss/{np.dtype(dtype).name}/grad"] = np.asarray(grad).tolist()
  return out


if __name__ == "__main__":
  print(json.dumps(compute()))
