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


def check_real_dtype(dtype, name: str) -> None:
  """Raises ``ValueError`` unless ``dtype`` is a real number type (or bool).

  Complex values would otherwise lose their imaginary part silently in the float cast.
  """
  dtype = np.dtype(dtype)
  if np.issubdtype(dtype, np.complexfloating):
    raise ValueError(
        f"{name} is complex ({dtype}); the metrics are defined for real values: pass the real "
        "part (or the modulus) explicitly.")
  if not (jnp.issubdtype(dtype, jnp.number) or dtype == np.bool_):
    raise ValueError(f"{name} must be numeric; got dtype {dtype}.")


def check_matrix(features, *, name: str = "features", min_samples: int = 2,
                 finite: bool = True) -> np.dtype:
  """Validates a ``[n, d]`` feature matrix without copying it; returns its dtype.

  ``finite=False`` leaves out the NaN/inf pass over the values, for a caller whose own pass
  over them catches NaN and inf.

  Raises:
    ValueError: not 2-D, fewer than ``min_samples`` rows, no columns, NaN or inf, a complex
      or a non-numeric dtype.
  """
  shape = np.shape(features)
  if len(shape) != 2:
    raise ValueError(f"{name} must be a 2-D array [n, d]; got shape {tuple(shape)}.")
  dtype = _dtype_of(features)
  check_real_dtype(dtype, name)
  if shape[0] < min_samples:
    raise ValueError(f"{name} needs at least {min_samples} samples (rows); got {shape[0]}.")
  if shape[1] < 1:
    raise ValueError(f"{name} needs at least one feature column; got shape {tuple(shape)}.")
  if finite and is_concrete(features):
    if not isinstance(features, (np.ndarray, jax.Array)):
      features = np.asarray(features)
    if not all_finite(features):
      raise ValueError(f"{name} contains NaN or inf values.")
  return dtype


def check_features(features, *, name: str = "features", min_samples: int = 2,
                   finite: bool = True) -> jax.Array:
  """Validates a ``[n, d]`` feature matrix (:func:`check_matrix`); returns it as a float JAX array.

  Raises:
    ValueError: as :func:`check_matrix`.
  """
  check_matrix(features, name=name, min_samples=min_samples, finite=finite)
  return numerics.as_float(features)


# Class counts above ``max(n, MAX_SPARSE_CLASSES)`` are refused: every metric allocates per class
# ([C, d] sums, [C, C] tables), so a label value of 1e9 would allocate terabytes. Up to this bound
# a label set with gaps (a subset of a large label space) is accepted as it is.
MAX_SPARSE_CLASSES = 1 << 16


def class_count_limit(n: int) -> int:
  """The largest class count ``C`` accepted for ``n`` samples: ``max(n, MAX_SPARSE_CLASSES)``."""
  return max(int(n), MAX_SPARSE_CLASSES)


def check_positive_int(value, name: str) -> int:
  """``value`` as a Python int >= 1: the check of every option that sets a shape or a count.

  Raises:
    ValueError: a float, a string, a bool, or a value < 1 (the message names ``name``).
  """
  if (not isinstance(value, (int, np.integer)) or isinstance(value, (bool, np.bool_))
      or value < 1):
    raise ValueError(f"{name} must be a positive Python int; got {value!r}.")
  return int(value)


def check_num_classes(num_classes, *, name: str = "num_classes"):
  """``num_classes`` as a Python int >= 1 (``None`` passes through).

  Raises:
    ValueError: a float, a string, a bool, or a value < 1.
  """
  if num_classes is None:
    return None
  if not isinstance(num_classes, (int, np.integer)) or isinstance(num_classes, (bool, np.bool_)):
    raise ValueError(f"{name} must be a Python int; got {num_classes!r}.")
  if num_classes < 1:
    raise ValueError(f"{name} must be >= 1; got {num_classes}.")
  return int(num_classes)


def check_labels(labels, n: int, *, num_classes: int | None = None, name: str = "labels",
                 host: bool = False):
  """Validates integer class labels ``[n]`` and returns ``(labels as int32 JAX array, C)``.

  With ``host=True`` (concrete labels only) the labels come back as a NumPy array instead, for
  a caller that computes on the host (nothing is copied to a device).

  ``C`` is ``num_classes`` when given, else ``max(labels) + 1`` (read from concrete labels).
  Everything downstream allocates by ``C``, so ``C`` is bounded *before* anything is allocated:
  ``C <= max(n, MAX_SPARSE_CLASSES)`` (65536). Larger label values (e.g. raw ids near 1e9) are
  refused with a message naming the largest label; relabel them to ``0..K-1`` first
  (``np.unique(labels, return_inverse=True)[1]``).

  Raises:
    ValueError: not 1-D, length other than ``n``, non-integer dtype, negative values, values
      >= ``num_classes``, a class count above the bound, ``num_classes`` not a positive int,
      or traced labels without ``num_classes``.
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
  num_classes = check_num_classes(num_classes)
  limit = class_count_limit(n)
  if num_classes is not None and num_classes > limit:
    raise ValueError(
        f"num_classes={num_classes} for {n} samples exceeds the limit of {limit} classes "
        "(every metric allocates per class); relabel the classes to 0..K-1.")
  if is_concrete(labels):
    values = np.asarray(labels)
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, -1)
    if lo < 0:
      raise ValueError(f"{name} must be >= 0; found {lo}.")
    if num_classes is None:
      if hi + 1 > limit:
        raise ValueError(
            f"the largest of the {name} is {hi}, which implies {hi + 1} classes for {n} samples "
            f"(more than the limit of {limit}; every metric allocates per class). Relabel the "
            f"classes to 0..K-1, e.g. np.unique({name}, return_inverse=True)[1].")
      num_classes = hi + 1
    elif hi >= num_classes:
      raise ValueError(f"{name} must be < num_classes={num_classes}; found {hi}.")
  elif num_classes is None:
    raise ValueError(
        f"{name} are traced (inside jit/vmap/grad): pass num_classes= as a static Python int.")
  if host:
    if not is_concrete(labels):
      raise ValueError(f"{name}: host=True needs concrete labels")
    return values, int(num_classes)
  if isinstance(labels, jax.Array):
    y = labels if labels.dtype == jnp.int32 else labels.astype(jnp.int32)
  else:
    y = jax.device_put(np.asarray(labels).astype(np.int32))  # converted on the host: no compile
  return y, int(num_classes)


def check_eps(eps, *, dtype=None):
  """Validates the distortion ``eps`` (a positive scalar or 1-D array of positive values).

  The value is checked in the dtype the computation runs in: ``eps`` must be a positive, finite,
  *normal* number there (at least ``finfo(dtype).tiny``, about 1.2e-38 in float32), so that
  neither ``eps`` nor ``1 / eps`` rounds to 0 or inf. ``eps = 1e-50`` with float32 features is
  refused instead of underflowing to 0 and producing NaN.

  Args:
    eps: scalar or [E].
    dtype: the compute dtype (pass the features' float dtype). Default: JAX's default float
      (float64 under ``jax_enable_x64``, else float32).

  Returns:
    ``(eps, is_vector)``: the value unchanged, and whether it is a 1-D array.

  Raises:
    ValueError: a string, bool, complex or other non-real value, more than one dimension, an
      empty array, or a value that is not positive, finite and normal in ``dtype``.
  """
  if isinstance(eps, (str, bytes, bool, np.bool_)):
    raise ValueError(f"eps must be a positive float (or a 1-D array of them); got {eps!r}.")
  shape = np.shape(eps)
  if len(shape) > 1:
    raise ValueError(f"eps must be a scalar or a 1-D array; got shape {tuple(shape)}.")
  eps_dtype = _dtype_of(eps)
  if eps_dtype == np.bool_ or not (np.issubdtype(eps_dtype, np.integer)
                                   or np.issubdtype(eps_dtype, np.floating)):
    raise ValueError(f"eps must be a positive real number; got {eps!r} (dtype {eps_dtype}).")
  if is_concrete(eps):
    host = np.asarray(eps, dtype=np.float64)
    if host.size == 0 or not np.all(np.isfinite(host)) or np.any(host <= 0):
      raise ValueError(f"eps must be positive and finite; got {eps!r}.")
    compute = numerics.float_dtype(np.float64 if dtype is None else dtype)
    info = np.finfo(compute)
    if np.any(host < info.tiny) or np.any(host > info.max):
      raise ValueError(
          f"eps={eps!r} is outside the normal range of {compute} ({info.tiny:.3g} to "
          f"{info.max:.3g}), where the computation runs: it would round to 0 or inf.")
  return eps, len(shape) == 1


def class_counts(labels, num_classes: int):
  """Samples per class ``[C]`` (NumPy int) of concrete labels, or ``None`` for traced ones."""
  if not is_concrete(labels):
    return None
  return np.bincount(np.asarray(labels).astype(np.int64).ravel(), minlength=num_classes)


def check_class_structure(labels, num_classes: int, *, metric: str, min_classes: int = 2,
                          singletons_ok: bool = True) -> None:
  """Refuses concrete labels a metric is undefined for (traced labels pass unchecked).

  Raises:
    ValueError: fewer than ``min_classes`` classes present, or (``singletons_ok=False``)
      every present class has a single sample (no within-class variation).
  """
  counts = class_counts(labels, num_classes)
  if counts is None:
    return
  present = counts > 0
  k = int(present.sum())
  if k < min_classes:
    which = f" (only class {int(np.argmax(present))})" if k == 1 else ""
    raise ValueError(
        f"{metric} needs at least {min_classes} classes present in the labels; got {k}{which}.")
  if not singletons_ok and int(counts.max()) <= 1:
    raise ValueError(
        f"{metric} needs a class with at least two samples: every class has one sample, so the "
        "within-class scatter is zero and the score is undefined.")


def check_not_constant(x, *, metric: str, name: str = "features") -> None:
  """Refuses a concrete feature matrix whose rows are all equal (constant features)."""
  if not is_concrete(x):
    return
  from transrate_jax._src import peer_numerics  # noqa: PLC0415 - avoids an import cycle
  if peer_numerics.is_constant(x):
    raise ValueError(
        f"{metric} is undefined for constant {name} (every sample has the same feature vector).")
