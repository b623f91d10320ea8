"""Input checks shared by every public function.

Checks on values (NaN, label range) run only on concrete inputs: inside a user's ``jit`` or
``vmap`` the arrays are tracers and only the shapes and dtypes can be checked.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics


def is_concrete(x) -> bool:
  """True when ``x`` holds values (a NumPy or committed JAX array), False for a tracer."""
  return not isinstance(x, jax.core.Tracer)


@jax.jit
def _all_finite(x):
  return jnp.all(jnp.isfinite(x))


def all_finite(x) -> bool:
  """Whether every entry of the concrete array ``x`` is finite (computed where ``x`` lives)."""
  if isinstance(x, np.ndarray):
    return bool(np.isfinite(x).all()) if np.issubdtype(x.dtype, np.inexact) else True
  return bool(_all_finite(x))


def _dtype_of(x) -> np.dtype:
  dtype = getattr(x, "dtype", None)
  return np.dtype(dtype if dtype is not None else np.asarray(x).dtype)


def check_matrix(features, *, name: str = "features", min_samples: int = 2) -> np.dtype:
  """Validates a ``[n, d]`` feature matrix without copying it; returns its dtype.

  Raises:
    ValueError: not 2-D, fewer than ``min_samples`` rows, no columns, NaN or inf, or a
      non-numeric dtype.
  """
  shape = np.shape(features)
  if len(shape) != 2:
    raise ValueError(f"{name} must be a 2-D array [n, d]; got shape {tuple(shape)}.")
  dtype = _dtype_of(features)
  if not (jnp.issubdtype(dtype, jnp.number) or dtype == np.bool_):
    raise ValueError(f"{name} must be numeric; got dtype {dtype}.")
  if shape[0] < min_samples:
    raise ValueError(f"{name} needs at least {min_samples} samples (rows); got {shape[0]}.")
  if shape[1] < 1:
    raise ValueError(f"{name} needs at least one feature column; got shape {tuple(shape)}.")
  if is_concrete(features):
    if not isinstance(features, (np.ndarray, jax.Array)):
      features = np.asarray(features)
    if not all_finite(features):
      raise ValueError(f"{name} contains NaN or inf values.")
  return dtype


def check_features(features, *, name: str = "features", min_samples: int = 2) -> jax.Array:
  """Validates a ``[n, d]`` feature matrix (:func:`check_matrix`); returns it as a float JAX array.

  Raises:
    ValueError: as :func:`check_matrix`.
  """
  check_matrix(features, name=name, min_samples=min_samples)
  return numerics.as_float(features)


def check_labels(labels, n: int, *, num_classes: int | None = None, name: str = "labels"):
  """Validates integer class labels ``[n]`` and returns ``(labels as int32 JAX array, C)``.

  ``C`` is ``num_classes`` when given, else ``max(labels) + 1`` (read from concrete labels).

  Raises:
    ValueError: not 1-D, length other than ``n``, non-integer dtype, negative values, values
      >= ``num_classes``, or traced labels without ``num_classes``.
  """
  shape = np.shape(labels)
  if len(shape) != 1:
    raise ValueError(f"{name} must be a 1-D array [n]; got shape {tuple(shape)}.")
  if shape[0] != n:
    raise ValueError(f"{name} has {shape[0]} entries but the features have {n} rows.")
  dtype = _dtype_of(labels)
  if not (jnp.issubdtype(dtype, jnp.integer) or dtype == np.bool_):
    raise ValueError(
        f"{name} must be integer class indices; got dtype {dtype}. "
        "For continuous targets use transrate_regression.")
  if num_classes is not None:
    if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, bool):
      raise ValueError(f"num_classes must be a Python int; got {num_classes!r}.")
    if num_classes < 1:
      raise ValueError(f"num_classes must be >= 1; got {num_classes}.")
  if is_concrete(labels):
    host = np.asarray(labels)
    lo, hi = (int(host.min()), int(host.max())) if host.size else (0, -1)
    if lo < 0:
      raise ValueError(f"{name} must be >= 0; found {lo}.")
    if num_classes is None:
      num_classes = hi + 1
    elif hi >= num_classes:
      raise ValueError(f"{name} must be < num_classes={num_classes}; found {hi}.")
  elif num_classes is None:
    raise ValueError(
        f"{name} are traced (inside jit/vmap/grad): pass num_classes= as a static Python int.")
  if isinstance(labels, jax.Array):
    y = labels if labels.dtype == jnp.int32 else labels.astype(jnp.int32)
  else:
    y = jax.device_put(np.asarray(labels).astype(np.int32))  # converted on the host: no compile
  return y, int(num_classes)


def check_eps(eps):
  """Validates the distortion ``eps`` (a positive scalar or 1-D array of positive values).

  Returns:
    ``(eps, is_vector)``: the value unchanged, and whether it is a 1-D array.
  """
  shape = np.shape(eps)
  if len(shape) > 1:
    raise ValueError(f"eps must be a scalar or a 1-D array; got shape {tuple(shape)}.")
  if is_concrete(eps):
    host = np.asarray(eps, dtype=np.float64)
    if host.size == 0 or not np.all(np.isfinite(host)) or np.any(host <= 0):
      raise ValueError(f"eps must be positive and finite; got {eps!r}.")
  return eps, len(shape) == 1
