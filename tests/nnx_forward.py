"""``model(x)`` for the backbone tests (tests/test_models_vision.py, test_models_resnet.py), one
``jax.jit`` per architecture. Imported after those modules' ``importorskip("flax")``."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

_FORWARD = {}


def forward(model, x) -> np.ndarray:
  """``model(x)`` as NumPy, under one ``jax.jit`` per architecture (a pretrained model and its
  random-init control share the compiled program)."""
  graphdef, state = nnx.split(model)
  fn = _FORWARD.get(graphdef)
  if fn is None:
    fn = _FORWARD[graphdef] = jax.jit(lambda s, v: nnx.merge(graphdef, s)(v))
  return np.asarray(fn(state, jnp.asarray(x)))
