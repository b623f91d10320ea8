"""Input checks shared by every public function.

Checks on values (NaN, label range) run only on concrete inputs: inside a user's ``jit`` or
``vmap`` the arrays are tracers and only the shapes and dtypes can be checked.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Iterable, Mapping

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
    ``(eps, is_vector)``: the value (an array: cast to the compute dtype), and whether it is 1-D.

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
    eps = np.asarray(eps, compute) if dtype is not None and hasattr(eps, "dtype") else eps
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


def _describe(value) -> str:
  """A short description of a bad argument for an error message: its type and a clipped repr."""
  text = repr(value)
  if len(text) > 60:
    text = text[:57] + "..."
  return f"{type(value).__name__} {text}"


def check_bool(value, name: str) -> bool:
  """``value`` as a Python bool; only ``True``/``False`` (Python or NumPy) pass.

  Raises:
    ValueError: anything else (a string such as ``"no"`` would otherwise count as true).
  """
  if not isinstance(value, (bool, np.bool_)):
    raise ValueError(f"{name} must be True or False; got {_describe(value)}.")
  return bool(value)


def check_real_scalar(value, name: str, *, minimum: float = 0.0, inclusive: bool = False,
                      maximum: float | None = None) -> float:
  """``value`` as a Python float: a real, finite number above ``minimum`` (at most ``maximum``).

  The check of every float hyper-parameter (a learning rate, a tolerance, a regulariser).

  Args:
    value: the argument.
    name: its name, for the message.
    minimum: the lower bound; ``inclusive=True`` accepts ``value == minimum`` (e.g. a
      regulariser that may be 0), else ``value`` must exceed it.
    inclusive: whether ``minimum`` itself is accepted.
    maximum: an optional (inclusive) upper bound.

  Raises:
    ValueError: a string, ``None``, a bool, a complex number or an array; NaN or inf; a value
      outside the bounds.
  """
  if (isinstance(value, (bool, np.bool_)) or np.ndim(value) != 0 or isinstance(value, (str, bytes))
      or not (isinstance(value, (int, float, np.integer, np.floating))
              or (isinstance(value, (np.ndarray, jax.Array))
                  and np.issubdtype(value.dtype, np.number)
                  and not np.issubdtype(value.dtype, np.complexfloating)))):
    raise ValueError(f"{name} must be a real number; got {_describe(value)}.")
  if not is_concrete(value):
    raise ValueError(f"{name} must be a concrete Python float, not a traced value.")
  number = float(value)
  bound = f">= {minimum:g}" if inclusive else f"> {minimum:g}"
  if maximum is not None:
    bound += f" and <= {maximum:g}"
  if (not np.isfinite(number) or number < minimum or (number == minimum and not inclusive)
      or (maximum is not None and number > maximum)):
    raise ValueError(f"{name} must be finite and {bound}; got {value!r}.")
  return number


def check_float_dtype(dtype, name: str = "dtype") -> np.dtype:
  """The compute dtype (:func:`numerics.float_dtype`) for a user's ``dtype`` argument.

  Raises:
    ValueError: not a dtype NumPy understands (``"x"``, a list, ...), complex or not numeric.
  """
  try:
    parsed = np.dtype(dtype)
  except TypeError as e:
    raise ValueError(f"{name} must be a float dtype such as np.float32; got {_describe(dtype)}."
                     ) from e
  check_real_dtype(parsed, name)
  return numerics.float_dtype(parsed)


def check_prng_key(key, name: str = "key"):
  """A single ``jax.random`` key from ``key``; a Python (or NumPy) int seed becomes
  ``jax.random.key(seed)``.

  Accepted: a typed key (``jax.random.key``, shape ``()``), a legacy raw key
  (``jax.random.PRNGKey``: ``uint32[2]``), an integer seed (a Python or NumPy int, or an integer
  0-d array, traced or not). Traced keys are checked by shape and dtype only.

  Raises:
    ValueError: anything else (a string, a float, a bool, ``None``, a batch of keys, an array
      that is not a raw key), or an integer seed outside the 64-bit range.
  """
  dtype = getattr(key, "dtype", None)
  if dtype is not None and jax.dtypes.issubdtype(dtype, jax.dtypes.prng_key):
    if np.shape(key) != ():
      raise ValueError(f"{name} must be a single jax.random key; got a batch of keys of shape "
                       f"{tuple(np.shape(key))} (use jax.vmap to score with several keys).")
    return key
  if isinstance(key, (bool, np.bool_)) or (dtype is not None and np.dtype(dtype) == np.bool_):
    raise ValueError(f"{name} must be a jax.random key or an int seed; got {_describe(key)}.")
  if isinstance(key, (int, np.integer)) or (
      dtype is not None and np.ndim(key) == 0 and np.issubdtype(np.dtype(dtype), np.integer)):
    try:
      return jax.random.key(key)
    except (OverflowError, TypeError, ValueError) as e:
      raise ValueError(f"{name}={key!r} is not a valid integer seed (64-bit range): {e}") from e
  if dtype is not None and np.dtype(dtype) == np.uint32 and np.ndim(key) == 1:
    try:
      jax.random.wrap_key_data(key)  # a legacy raw key (jax.random.PRNGKey) of the default impl
    except (TypeError, ValueError) as e:
      raise ValueError(f"{name} is a uint32 array of shape {tuple(np.shape(key))}, not a "
                       f"jax.random.PRNGKey: {e}") from e
    return key
  raise ValueError(
      f"{name} must be a jax.random key (jax.random.key(seed) or jax.random.PRNGKey(seed)) or an "
      f"int seed; got {_describe(key)}.")


def check_finite_result(value, *, metric: str, features=None, eps=None, hint: str = ""):
  """``value`` itself when it is finite or traced; a :class:`ValueError` when a concrete score
  is NaN or inf although its (validated, finite) inputs were finite.

  A metric calls this on its result, so that no finite input yields a silent NaN. When the
  ``features`` are given the message says whether their scale overflows the products the
  metric forms in their float dtype (``n max|f|^2``, or ``max|f|^2 / eps`` with ``eps``, beyond
  the dtype's largest value, 3.4e38 in float32): only on failure, so a finite result costs one
  check of the (small) result.

  Args:
    value: the computed score (scalar or array).
    metric: the metric's name, for the message.
    features: the [n, d] features the score was computed from (optional).
    eps: the distortion, when the metric divides by it (optional).
    hint: a sentence appended to the message (what else can cause it).

  Raises:
    ValueError: ``value`` is concrete and not finite.
  """
  if not is_concrete(value):
    return value
  values = np.asarray(value)
  if np.issubdtype(values.dtype, np.inexact) and not np.all(np.isfinite(values)):
    raise ValueError(_non_finite_message(values, metric, features, eps, hint))
  return value


def _non_finite_message(values, metric, features, eps, hint) -> str:
  reason = "a product or factorisation overflowed or broke down in the working precision. "
  if features is not None and is_concrete(features):
    dtype = numerics.float_dtype(_dtype_of(features))
    top = float(np.finfo(dtype).max)
    n = np.shape(features)[0]
    biggest = float(jnp.max(jnp.abs(jnp.asarray(features))))
    square = biggest * biggest
    products = [f"n * max|f|^2 = {n * square:.3g}"]
    too_big = n * square > top
    if eps is not None:
      eps_min = float(np.min(np.asarray(eps, np.float64)))
      products.append(f"max|f|^2 / eps = {square / eps_min:.3g}")
      too_big = too_big or square / eps_min > top
    if too_big:
      reason = (f"the features' scale (max|f| = {biggest:.3g}) overflows {dtype} products ("
                + ", ".join(products) + f", beyond the largest {dtype}, {top:.3g}). ")
    else:
      reason = f"a product or factorisation overflowed or broke down in {dtype}. "
  got = values.item() if values.size == 1 else values.ravel()[:4].tolist()
  return (f"{metric} is not finite (got {got}) although the inputs are "
          f"finite: {reason}Rescale or L2-normalise the features (e.g. divide them by their "
          "largest magnitude), or pass float64 features with jax_enable_x64 on."
          + (f" {hint}" if hint else ""))


@functools.partial(jax.jit, static_argnames=("num_classes",))
def _class_constant(x, labels, *, num_classes):
  first = jnp.full((num_classes,), x.shape[0], jnp.int32).at[labels].min(
      jnp.arange(x.shape[0], dtype=jnp.int32))
  return jnp.all(x == x[first[labels]])


def check_within_class_variation(x, labels, num_classes: int, *, metric: str,
                                 name: str = "features") -> None:
  """Refuses concrete features whose every class holds a single repeated feature vector.

  Then the within-class scatter is exactly zero (a Fisher discriminant, for one, divides by it).
  Traced features or labels pass unchecked.

  Raises:
    ValueError: every sample equals the first sample of its class (constant features, all-zero
      features, one-hot class indicators, every class a single sample).
  """
  if not (is_concrete(x) and is_concrete(labels)):
    return
  if isinstance(x, np.ndarray):
    y = np.asarray(labels).astype(np.int64)
    first = np.full(num_classes, y.shape[0], np.int64)
    np.minimum.at(first, y, np.arange(y.shape[0]))
    constant = bool(np.all(x == x[first[y]]))
  else:
    constant = bool(_class_constant(x, jnp.asarray(labels, jnp.int32), num_classes=num_classes))
  if constant:
    raise ValueError(
        f"{metric} is undefined when every class's samples share one feature vector (constant or "
        f"all-zero {name}, class indicators, single-sample classes): the within-class scatter "
        "is zero. Check that the features come from the intended layer.")


def check_moment_statistics(counts, sums, second_moments, shift, n, *,
                            name: str = "TransRateStats") -> None:
  """Checks the fields of per-class moment statistics (:class:`TransRateStats`) by shape and
  dtype: counts ``[C]`` integer, sums ``[C, d]`` float, second moments ``[C, d, d]`` of the sums'
  dtype, shift ``[d]`` float, ``n`` an integer scalar (traced fields included).

  Raises:
    ValueError: a field that is not an array (``None``, a string, a list), or of the wrong
      rank, dtype or shape; the message suggests ``TransRateStats.init``.
  """
  fields = {"counts": counts, "sums": sums, "second_moments": second_moments, "shift": shift,
            "n": n}
  help_ = f"build the statistics with {name}.init(dim, num_classes=C) and {name}.update."
  for field, value in fields.items():
    if not isinstance(value, (np.ndarray, jax.Array)):
      raise ValueError(f"{name}.{field} must be an array; got {_describe(value)}: {help_}")
  ranks = {"counts": 1, "sums": 2, "second_moments": 3, "shift": 1, "n": 0}
  for field, rank in ranks.items():
    if fields[field].ndim != rank:
      raise ValueError(f"{name}.{field} must have {rank} dimension(s); got shape "
                       f"{tuple(fields[field].shape)}: {help_}")
  for field in ("counts", "n"):
    if not np.issubdtype(np.dtype(fields[field].dtype), np.integer):
      raise ValueError(f"{name}.{field} must be integer; got dtype {fields[field].dtype}: {help_}")
  for field in ("sums", "second_moments", "shift"):
    if not np.issubdtype(np.dtype(fields[field].dtype), np.floating):
      raise ValueError(f"{name}.{field} must be a float array; got dtype "
                       f"{fields[field].dtype}: {help_}")
  c, d = sums.shape
  if (counts.shape != (c,) or second_moments.shape != (c, d, d) or shift.shape != (d,)
      or second_moments.dtype != sums.dtype or shift.dtype != sums.dtype):
    raise ValueError(
        f"{name} fields disagree: counts {tuple(counts.shape)}, sums {tuple(sums.shape)} "
        f"{sums.dtype}, second_moments {tuple(second_moments.shape)} {second_moments.dtype}, shift "
        f"{tuple(shift.shape)} {shift.dtype} (expected [C], [C, d], [C, d, d], [d], one float "
        f"dtype): {help_}")


def iter_pairs(source, *, name: str = "batches"):
  """An iterator over the ``(features, labels)`` pairs of ``source``, checking each item.

  Raises:
    ValueError: ``source`` is not iterable (``None``, a number), a string, a mapping or an array;
      (when iterated) an item that is not a pair: a string, a mapping, an array, ``None``, a
      scalar, a tuple of another length.
  """
  _check_pair_source(source, name)
  return _pairs(iter(source), name)


def _check_pair_source(source, name):
  if isinstance(source, (str, bytes, Mapping, np.ndarray, jax.Array)) or not isinstance(
      source, Iterable):
    raise ValueError(f"{name} must be an iterable of (features, labels) pairs, e.g. "
                     f"[(f0, y0), (f1, y1)]; got {_describe(source)}.")


def _pairs(iterator, name):
  for i, item in enumerate(iterator):
    pair = None
    if not isinstance(item, (str, bytes, Mapping, np.ndarray, jax.Array)):
      try:
        pair = tuple(item)
      except TypeError:
        pair = None
    if pair is None or len(pair) != 2:
      what = (f"a {type(item).__name__} of {len(pair)} elements" if pair is not None
              else _describe(item))
      raise ValueError(f"{name} must yield (features, labels) pairs; item {i} is {what}.")
    yield pair


def check_batches(batches, *, name: str = "batches") -> None:
  """Checks the ``batches`` argument of a streaming metric before it is iterated: an iterable
  of pairs (:func:`iter_pairs`) or a callable that takes no arguments.

  Raises:
    ValueError: ``None``, a number, a string, a mapping, an array, or a callable that needs
      arguments.
  """
  if callable(batches):  # called for a fresh iterable, as the streaming metrics do
    try:
      signature = inspect.signature(batches)
    except (TypeError, ValueError):  # a builtin without a signature: tried when called
      return
    try:
      signature.bind()
    except TypeError as e:
      raise ValueError(f"{name} is a callable that needs arguments {signature}; pass a "
                       "zero-argument callable that returns a fresh iterable of (features, "
                       "labels) pairs.") from e
    return
  _check_pair_source(batches, name)


def check_mask(mask, n: int, *, name: str = "mask"):
  """A row mask ``[n]`` of booleans (``None``: every row, as a NumPy array of True).

  Raises:
    ValueError: a shape other than ``(n,)``, or a dtype other than bool (a float, integer or
      string mask would be cast to bool silently: pass ``np.asarray(mask, bool)`` if meant).
  """
  if mask is None:
    return np.ones((n,), bool)
  if np.shape(mask) != (n,):
    raise ValueError(f"{name} must have shape ({n},); got {np.shape(mask)}.")
  if _dtype_of(mask) != np.bool_:
    raise ValueError(f"{name} must be a boolean array; got dtype {_dtype_of(mask)} (pass "
                     f"np.asarray({name}, bool) if the values are meant as truth values).")
  return mask
