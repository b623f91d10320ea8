"""Activation capture for Flax models: every layer's output as ``[n, d]`` features.

One forward pass of a Flax model (Linen or NNX) records the output of every submodule's
``__call__`` without any change to the model's code, pools each output to ``[n, d]`` and returns
``{layer name: features}`` in call order (a module's output is recorded when its call returns, so
children come before their parent and the model's own output, named ``"output"``, comes last).

* Linen: the hook is ``flax.linen.intercept_methods``; it sees every ``__call__`` of every bound
  module, including subclasses that only inherit ``__call__``. Layer names are module paths
  joined by ``/`` (``"Block_0/Conv_1"``).
* NNX: while the forward pass is traced, the ``__call__`` of each module class found in the model
  is wrapped by a recorder that only acts on that model's module instances (thread-local; the
  classes are restored when tracing ends). Unlike ``nnx.capture(..., method_outputs=...)`` this
  covers subclasses that only inherit ``__call__``. Names are attribute paths joined by ``/``
  (``"blocks/0/conv"``).

Plain functions (``nnx.relu``, ``jnp.mean``) are not modules and are not recorded: a ``Conv``'s
output is pre-activation unless the activation lives inside a module (a block) whose output is.

Eval mode: NNX models run as ``model.eval()`` (``deterministic=True`` and
``use_running_average=True`` on every submodule that has them) on a copy, so the caller's model is
untouched. Linen ``BatchNorm`` and ``Dropout`` calls are forced to ``use_running_average=True`` and
``deterministic=True`` through the interceptor; other train/eval switches of a Linen model (a
``train`` argument of ``__call__``) are passed with ``call_kwargs``.
"""

from __future__ import annotations

import fnmatch
import functools
import re
import threading
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from transrate_jax._src import backend
from transrate_jax._src import numerics
from transrate_jax._src import progress as progress_lib
from transrate_jax._src import validation

POOL_MODES = ("mean", "max", "flatten", "first")
OUTPUT_NAME = "output"

__all__ = ("intermediates", "pool", "POOL_MODES")


def pool(x, mode: str | Callable[[jax.Array], jax.Array] = "mean") -> jax.Array:
  """Pools one layer output ``[n, ..., c]`` into ``[n, d]`` features.

  * ``[n]`` becomes ``[n, 1]``; ``[n, d]`` passes through unchanged, whatever the mode.
  * ``[n, h, w, c]`` (images) or ``[n, t, c]`` (tokens), and any ``[n, s1, ..., sk, c]``:
    ``"mean"``: mean over the middle axes, ``[n, c]``; ``"max"``: maximum over them, ``[n, c]``;
    ``"flatten"``: ``[n, s1 * ... * sk * c]``; ``"first"``: the first position (the CLS token of a
    transformer, the top-left pixel of an image), ``[n, c]``.
  * A callable is applied as is and must return ``[n, d]``.

  Half precision is upcast to float32 before pooling.

  Args:
    x: [n, ...] array, channels last.
    mode: one of ``"mean"``, ``"max"``, ``"flatten"``, ``"first"``, or a callable.

  Returns:
    [n, d] array.

  Example:
    >>> import jax.numpy as jnp
    >>> from transrate_jax.capture import pool
    >>> pool(jnp.ones((4, 7, 7, 32)), "mean").shape
    (4, 32)
  """
  if callable(mode):
    return mode(x)
  if mode not in POOL_MODES:
    raise ValueError(f"pool must be one of {POOL_MODES} or a callable; got {mode!r}.")
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.floating):
    x = x.astype(numerics.float_dtype(x.dtype))
  if x.ndim == 0:
    raise ValueError("pool needs an array with a leading batch axis; got a scalar.")
  if x.ndim == 1:
    return x[:, None]
  if x.ndim == 2:
    return x
  n, c = x.shape[0], x.shape[-1]
  if mode == "flatten":
    return x.reshape(n, -1)
  tokens = x.reshape(n, -1, c)
  if mode == "mean":
    return jnp.mean(tokens, axis=1)
  if mode == "max":
    return jnp.max(tokens, axis=1)
  return tokens[:, 0]


# ---------------------------------------------------------------------------------------------
# Recording.


class _Recorder:
  """Collects batched array outputs in call order; repeated calls get ``name@1``, ``name@2``..."""

  def __init__(self, batch: int):
    self.batch = batch
    self.outputs: dict[str, jax.Array] = {}
    self.counts: dict[str, int] = {}

  def add(self, name: str, out) -> None:
    if not isinstance(out, jax.Array):
      return
    if out.ndim < 1 or out.shape[0] != self.batch or not jnp.issubdtype(out.dtype, jnp.inexact):
      return
    k = self.counts.get(name, 0)
    self.counts[name] = k + 1
    self.outputs[name if k == 0 else f"{name}@{k}"] = out


def _path_name(path: Iterable[Any]) -> str:
  name = "/".join(str(p) for p in path)
  return name or OUTPUT_NAME


def _linen_forward(model: nn.Module, call_kwargs: Mapping[str, Any]):
  """A pure ``(variables, x) -> {name: output}`` for a Linen module."""

  def forward(variables, x):
    rec = _Recorder(jax.tree.leaves(x)[0].shape[0])

    def interceptor(next_fun, args, kwargs, context):
      if context.method_name != "__call__":
        return next_fun(*args, **kwargs)
      module = context.module
      if isinstance(module, nn.BatchNorm):
        out = _call_forced(module, next_fun, args, kwargs, "use_running_average")
      elif isinstance(module, nn.Dropout):
        out = _call_forced(module, next_fun, args, kwargs, "deterministic")
      else:
        out = next_fun(*args, **kwargs)
      rec.add(_path_name(module.path), out)
      return out

    with nn.intercept_methods(interceptor):
      model.apply(variables, x, mutable=True, **call_kwargs)
    return rec.outputs

  return forward


def _call_forced(module, next_fun, args, kwargs, key):
  """Calls a Linen BatchNorm/Dropout with ``key=True`` (eval behaviour), wherever it is set.

  Linen refuses a flag given both to the constructor and to the call, so a flag set on the
  module is switched on the bound copy (``apply`` binds a fresh clone; the caller's module is
  untouched) and restored afterwards; otherwise it is passed to the call.
  """
  if getattr(module, key, None) is not None:
    previous = getattr(module, key)
    object.__setattr__(module, key, True)
    try:
      return next_fun(*args, **kwargs)
    finally:
      object.__setattr__(module, key, previous)
  if len(args) >= 2:
    args = (args[0], True, *args[2:])
  else:
    kwargs = {**kwargs, key: True}
  return next_fun(*args, **kwargs)


_LOCAL = threading.local()
_PATCH_LOCK = threading.RLock()


def _defines_call(cls) -> bool:
  return any("__call__" in vars(k) for k in cls.__mro__ if k is not object)


def _recording_call(orig):
  @functools.wraps(orig)
  def wrapper(self, *args, **kwargs):
    state = getattr(_LOCAL, "nnx", None)
    key = id(self)
    if state is None or key not in state["names"] or key in state["active"]:
      return orig(self, *args, **kwargs)
    state["active"].add(key)
    try:
      out = orig(self, *args, **kwargs)
    finally:
      state["active"].discard(key)
    state["rec"].add(state["names"][key], out)
    return out

  wrapper._transrate_jax_recorder = True
  return wrapper


def _nnx_forward(graphdef, call_kwargs: Mapping[str, Any]):
  """A pure ``(state, x) -> {name: output}`` for an NNX module given by its graphdef."""

  def forward(state, x):
    model = nnx.merge(graphdef, state)
    model.eval()  # a fresh copy: the caller's model keeps its mode.
    names = {}
    for path, module in nnx.iter_modules(model):
      names.setdefault(id(module), _path_name(path))
    classes = {type(m) for _, m in nnx.iter_modules(model) if _defines_call(type(m))}
    rec = _Recorder(jax.tree.leaves(x)[0].shape[0])
    with _PATCH_LOCK:
      saved = [(cls, vars(cls).get("__call__", None), cls.__call__) for cls in classes]
      for cls, _, resolved in saved:
        if not getattr(resolved, "_transrate_jax_recorder", False):
          setattr(cls, "__call__", _recording_call(resolved))
      previous = getattr(_LOCAL, "nnx", None)
      _LOCAL.nnx = {"names": names, "active": set(), "rec": rec}
      try:
        model(x, **call_kwargs)
      finally:
        _LOCAL.nnx = previous
        for cls, own, resolved in saved:
          if getattr(resolved, "_transrate_jax_recorder", False):
            continue
          if own is None:
            delattr(cls, "__call__")
          else:
            setattr(cls, "__call__", own)
    return rec.outputs

  return forward


# ---------------------------------------------------------------------------------------------
# Layer selection.


def _select(available: Sequence[str], layers) -> list[str]:
  listing = ", ".join(available)
  if layers is None:
    return list(available)
  if isinstance(layers, re.Pattern):
    chosen = [a for a in available if layers.search(a)]
    what = f"regex {layers.pattern!r}"
  elif isinstance(layers, str):
    chosen = [a for a in available if fnmatch.fnmatchcase(a, layers)]
    what = f"pattern {layers!r}"
  elif callable(layers):
    chosen = [a for a in available if layers(a)]
    what = "the predicate"
  else:
    wanted = list(layers)
    if not all(isinstance(w, str) for w in wanted):
      raise ValueError(f"layers must be None, a pattern string, a list of names or a predicate; "
                       f"got {layers!r}.")
    unknown = [w for w in wanted if w not in available]
    if unknown:
      raise ValueError(f"unknown layer name(s) {unknown}; available layers: {listing}.")
    wanted_set = set(wanted)
    chosen = [a for a in available if a in wanted_set]
    what = f"the list {wanted}"
  if not chosen:
    raise ValueError(f"{what} matches no layer; available layers: {listing}.")
  return chosen


# ---------------------------------------------------------------------------------------------
# Driver.

# Per process, bounded (oldest out first): the jitted forward of each (model structure, layers,
# pool, call keywords), and the layer names a probe found for each (model structure, input
# shapes, call keywords). A pretrained backbone and its random-init control share the structure
# (the graphdef), so they share both: one trace of the model, one program.
_JIT_CACHE: dict[Any, Callable] = {}
_PROBE_CACHE: dict[Any, tuple] = {}
_CACHE_SIZE = 32


def _cache_key(*parts):
  try:
    hash(parts)
  except TypeError:
    return None
  return parts


def _cached(cache: dict, key, make):
  """``cache[key]``, made by ``make()`` on a miss; a None key (unhashable parts) is not cached."""
  if key is None:
    return make()
  value = cache.get(key)
  if value is None:
    if len(cache) >= _CACHE_SIZE:
      cache.pop(next(iter(cache)))
    value = cache[key] = make()
  return value


def _avals(tree):
  """A hashable description of a pytree's structure, shapes and dtypes."""
  return (jax.tree.structure(tree),
          tuple((np.shape(a), str(getattr(a, "dtype", type(a)))) for a in jax.tree.leaves(tree)))


# Arrays one assembly program takes at most: its compile time grows with them (100 layers x 200
# batches in one program: 7.5 s; one program per layer, 200 arrays each: 1 s for all).
_ASSEMBLE_ARRAYS = 256


@functools.partial(jax.jit, static_argnames="rows")
def _assemble_program(pieces, *, rows: int):
  return tuple(jnp.concatenate(parts, axis=0)[:rows] for parts in zip(*pieces))


def _assemble(pieces, rows: int) -> tuple:
  """The batches' outputs as whole columns: ``pieces`` [b][layer] -> per layer ``[rows, d]``, the
  padding rows of the last batch dropped. Layers are joined a group at a time, each group one
  compiled program of at most :data:`_ASSEMBLE_ARRAYS` arrays (a model's few batches: one
  program for every layer, not one eager concatenation and slice per layer)."""
  per = max(1, _ASSEMBLE_ARRAYS // len(pieces))
  return sum((_assemble_program([p[i:i + per] for p in pieces], rows=rows)
              for i in range(0, len(pieces[0]), per)), ())


def _batch(inputs, start: int, stop: int, size: int):
  """Rows ``start:stop`` of every leaf, padded to ``size`` rows by repeating the last row."""

  def take(a):
    part = a[start:stop]
    if stop - start == size:
      return part
    xp = np if isinstance(a, np.ndarray) else jnp
    pad = xp.repeat(part[-1:], size - (stop - start), axis=0)
    return xp.concatenate([part, pad], axis=0)

  return jax.tree.map(take, inputs)


def intermediates(
    model,
    inputs,
    *,
    variables=None,
    layers=None,
    pool: str | Callable[[jax.Array], jax.Array] = "mean",
    batch_size: int = 256,
    progress: Optional[bool] = None,
    call_kwargs: Mapping[str, Any] | None = None,
) -> dict[str, jax.Array]:
  """Features of every layer of a Flax model: ``{layer name: [n, d]}`` in call order.

  Runs the model in eval mode over ``inputs`` in batches of ``batch_size`` under one compiled
  program (the last batch is padded by repeating its last row, so every batch has the same shape;
  the padding rows are dropped), records the output of every submodule ``__call__`` that is a
  float array with the batch as leading axis, and pools each to ``[n, d]`` (see :func:`pool`).
  The model's code is not changed and an NNX model is not mutated. Per process, the layer names
  found for a model structure (NNX graphdef or Linen module, with the shapes of its variables)
  at an input shape, and the compiled program for a layer selection, are kept (the 32 latest of
  each): another model of the same structure, e.g. a backbone's random-init control, is not
  traced again.

  Args:
    model: a Linen ``nn.Module`` (pass ``variables``) or an NNX ``nnx.Module`` (no variables).
    inputs: [n, ...] array (NumPy or JAX), or a pytree of arrays sharing the leading axis ``n``;
      passed to the model as its first argument.
    variables: the Linen variables (``{"params": ..., "batch_stats": ...}``); None for NNX.
    layers: which layers to return. None: all of them. A string: a glob pattern
      (``"blocks/*"``; an exact name is a pattern too). A compiled ``re.Pattern``: names it
      ``search``es. A list of names. A predicate ``name -> bool``.
    pool: ``"mean"`` (default), ``"max"``, ``"flatten"``, ``"first"`` or a callable
      ``[b, ...] -> [b, d]``; applied to outputs with more than two axes.
    batch_size: rows per forward pass (keyword-only Python int); ``min(batch_size, n)`` is used.
      Features do not depend on it beyond float rounding of the model's own kernels.
    progress: a ``tqdm`` bar over batches: True, False, or None (default: only for long
      interactive work).
    call_kwargs: extra keyword arguments of the model call, e.g. ``{"train": False}`` for a
      Linen model with a ``train`` switch, or ``{"rngs": ...}`` for ``apply``.

  Returns:
    dict ``{name: [n, d] jax.Array}`` in call order; the model's own output is ``"output"``.

  Raises:
    ValueError: unknown layer names or a selection that matches nothing (the message lists the
      available layers), inputs the model cannot be called on, a Linen module without
      variables, a bad ``pool`` or ``batch_size``.

  Example:
    >>> from transrate_jax import zoo
    >>> from transrate_jax.capture import intermediates
    >>> x, y, _, _ = zoo.load_target_task()
    >>> feats = intermediates(zoo.load("cnn_s_digits04"), x, layers="blocks/*", progress=False)
    >>> {k: v.shape for k, v in feats.items()}
    {'blocks/0/conv': (229, 8), 'blocks/0': (229, 8),
     'blocks/1/conv': (229, 16), 'blocks/1': (229, 16)}
  """
  validation.check_positive_int(batch_size, "batch_size")
  if not callable(pool) and pool not in POOL_MODES:
    raise ValueError(f"pool must be one of {POOL_MODES} or a callable; got {pool!r}.")
  call_kwargs = dict(call_kwargs or {})

  leaves = jax.tree.leaves(inputs)
  if not leaves or not all(hasattr(a, "shape") and hasattr(a, "dtype") for a in leaves):
    raise ValueError("inputs must be an array [n, ...] (NumPy or JAX) or a pytree of arrays.")
  shapes = [np.shape(a) for a in leaves]
  if any(len(s) == 0 for s in shapes) or len({s[0] for s in shapes}) != 1:
    raise ValueError(f"every input array needs the same leading batch axis; got shapes {shapes}.")
  n = shapes[0][0]
  if n < 1:
    raise ValueError("inputs have no rows.")
  size = min(int(batch_size), n)
  backend.relieve_mapping_pressure()  # each model's forward programs add to the process's mappings

  if isinstance(model, nnx.Module):
    if variables is not None:
      raise ValueError("an NNX module carries its own state: pass variables=None.")
    graphdef, params = nnx.split(model)
    forward = _nnx_forward(graphdef, call_kwargs)
    model_key = ("nnx", graphdef)
  elif isinstance(model, nn.Module):
    if variables is None:
      raise ValueError("a Linen module needs its variables: intermediates(model, x, "
                       "variables=variables).")
    params = variables
    forward = _linen_forward(model, call_kwargs)
    model_key = ("linen", model)
  else:
    raise ValueError(f"model must be a flax.linen.Module or a flax.nnx.Module; got "
                     f"{type(model).__name__}.")

  spec = jax.tree.map(lambda a: jax.ShapeDtypeStruct((size, *np.shape(a)[1:]), a.dtype), inputs)
  kwargs_key = _cache_key(tuple(sorted(call_kwargs.items())))

  def find_layers():
    order: list[str] = []

    def probe(params, x):
      outs = forward(params, x)
      order[:] = list(outs)
      return tuple(outs.values())

    try:
      jax.eval_shape(probe, params, spec)
    except Exception as e:  # pylint: disable=broad-except
      raise ValueError(
          f"the model cannot be called on inputs of shape "
          f"{jax.tree.map(lambda s: s.shape, spec)} (batch of {size}): "
          f"{type(e).__name__}: {e}") from e
    return tuple(order)

  probe_key = None if kwargs_key is None else _cache_key(model_key, kwargs_key, _avals(spec),
                                                         _avals(params))
  available = list(_cached(_PROBE_CACHE, probe_key, find_layers))
  if not available:
    raise ValueError("the model produced no array outputs with a leading batch axis.")
  chosen = tuple(_select(available, layers))

  def make():
    def run(params, x):
      outs = forward(params, x)
      return tuple(pool_fn(outs[name]) for name in chosen)
    return run

  pool_fn = functools.partial(_pool_checked, mode=pool)
  key = None if kwargs_key is None else _cache_key(model_key, chosen, pool, kwargs_key)
  run = _cached(_JIT_CACHE, key, lambda: jax.jit(make()))

  starts = range(0, n, size)
  bar = progress_lib.bar(len(starts), progress, "intermediates", unit="batch", leave=False)
  pieces: list[tuple[jax.Array, ...]] = []
  try:
    for start in starts:
      stop = min(start + size, n)
      pieces.append(run(params, _batch(inputs, start, stop, size)))
      if bar is not None:
        bar.update(1)
  finally:
    if bar is not None:
      bar.close()
  cols = pieces[0] if len(pieces) == 1 else _assemble(pieces, n)
  return dict(zip(chosen, cols))


def _pool_checked(x, *, mode):
  y = pool(x, mode)
  if not isinstance(y, jax.Array) or y.ndim != 2 or y.shape[0] != x.shape[0]:
    raise ValueError(f"pool must return [n, d]; got shape {getattr(y, 'shape', None)} for an "
                     f"output of shape {x.shape}.")
  return y
