"""The metric registry: one description per metric, declared next to the metric.

Every metric module ends with one :func:`register_metric` call; ``score_many``, ``layer_sweep``,
``rank_models``, the command line's ``--metric``, the demo and the benchmark protocol all read
their list from here, and nothing else keeps one. A metric of the family ``consumes`` is called as

* ``"features"``: ``fn(features [n, d], labels [n], *, num_classes=None, **options)``;
* ``"source_probs"``: ``fn(source_probs [n, Cs], labels [n], *, num_classes=None, **options)``,
  the source model's class probabilities on the target samples (LEEP);
* ``"source_labels"``: ``fn(source_labels [n] int, labels [n], *, num_classes=None, **options)``,
  the source model's hard predictions (NCE);

and returns a scalar ``jax.Array``, higher is better. Every metric runs with no keywords (one that
draws random numbers takes a fixed default key). Extras beyond the score (LogME's ``alpha`` and
``beta``, the Ledoit-Wolf shrinkage) come from a separate ``*_details`` function, never from a flag
that changes the return type.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from typing import Any, Callable, Dict, Mapping, Optional

import jax

CONSUMES = ("features", "source_probs", "source_labels")


@dataclasses.dataclass(frozen=True)
class Metric:
  """The description of one registered metric.

  Attributes:
    name: the registry key (``score_many("logme", ...)``, ``--metric logme``).
    fn: the public, validating function (see the module docstring for its signature).
    consumes: "features", "source_probs" or "source_labels": what the first argument is.
    description: one line for tables, ``--help`` and the README.
    options: the metric's keyword options and their defaults (read from ``fn``'s keyword-only
      parameters, ``num_classes`` excluded): the only keywords ``metric_options`` may pass it.
    vmappable: ``jax.vmap(lambda f: fn(f, labels, **options))`` works over a stack of inputs of
      one shape (labels concrete, ``num_classes`` static).
    zero_pad_exact: appending zero feature columns leaves the score unchanged (to round-off), so
      a sweep may pad widths to shared buckets.
    batched: optional ``batched(labels, n, **options) -> BatchedRunner`` factory for the sweep:
      it validates once and returns the :class:`BatchedRunner` the sweep scores stacks with.
      Without it the sweep ``vmap``-s ``fn``.
    bytes_per_item: optional ``bytes_per_item(n, width, itemsize) -> int``, the working memory of
      one input in a batch (default ``itemsize * (4 n D + 3 min(n, D)^2)``).
    open_options: ``fn`` takes ``**kwargs``, so any option is passed on unchecked.
    across_candidates: optional ``across_candidates(features_seq, labels, *, num_classes=None,
      **options) -> [m]`` for a metric whose published score of a candidate depends on the whole
      candidate set (NCTI normalises each of its terms over the candidates). ``layer_sweep``,
      ``rank_models`` and ``score_features`` score a set with it; ``fn`` (and ``score_many``) give
      the value of one candidate alone.
    differentiable: ``jax.grad`` of ``fn`` with respect to its first argument works, on every
      backend. A metric that is not differentiable raises a ValueError under ``grad``/``jvp`` on
      every backend alike (:func:`no_derivative`), never on one backend only.
  """
  name: str
  fn: Callable[..., Any]
  consumes: str = "features"
  description: str = ""
  options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
  vmappable: bool = True
  zero_pad_exact: bool = False
  batched: Optional[Callable[..., Callable]] = None
  bytes_per_item: Optional[Callable[[int, int, int], int]] = None
  open_options: bool = False
  across_candidates: Optional[Callable[..., Any]] = None
  differentiable: bool = False

  def check_options(self, options: Mapping[str, Any]) -> dict:
    """``options`` as a dict, or a ValueError naming this metric and the unknown keys."""
    unknown = sorted(set(options) - set(self.options))
    if unknown and not self.open_options:
      known = ", ".join(sorted(self.options)) or "none"
      raise ValueError(f"metric {self.name!r} has no option(s) {unknown}; its options: {known}.")
    return dict(options)


_REGISTRY: Dict[str, Metric] = {}


@dataclasses.dataclass(frozen=True)
class BatchedRunner:
  """How the sweep scores a metric's stacks: what a metric's ``batched`` factory returns.

  Attributes:
    stack: ``stack(features [k, n, D], dims [k] int32) -> [k, ...]``: the scores of ``k`` matrices
      zero-padded to the width ``D``, given their true widths.
    one: optional ``one(matrix [n, d], width, dim) -> score``: when set, the sweep calls it for each
      unpadded matrix instead of stacking (TransRate on the CPU: each matrix goes to the host
      products, padded to the bucket ``width`` there).
    padded_width: optional ``padded_width(width, padded) -> int``: the bucket width to use for a
      matrix of ``width`` columns instead of ``padded`` (TransRate keeps every term on the side of
      its true width).
  """
  stack: Callable[..., Any]
  one: Optional[Callable[..., Any]] = None
  padded_width: Optional[Callable[[int, int], int]] = None


def _options_of(fn) -> tuple:
  """``({option: default}, takes **kwargs)``: ``fn``'s keyword-only parameters but ``num_classes``."""
  try:
    params = list(inspect.signature(fn).parameters.values())
  except (TypeError, ValueError):
    return {}, True
  options = {p.name: p.default for p in params
             if p.kind is p.KEYWORD_ONLY and p.name != "num_classes"}
  return options, any(p.kind is p.VAR_KEYWORD for p in params)


def register_metric(name: str, fn: Callable[..., Any], *, consumes: str = "features",
                    description: str = "", vmappable: bool = True, zero_pad_exact: bool = False,
                    batched: Optional[Callable] = None, bytes_per_item: Optional[Callable] = None,
                    across_candidates: Optional[Callable] = None, differentiable: bool = False,
                    overwrite: bool = False) -> Metric:
  """Adds a metric to the registry (``score_many``, ``layer_sweep``, the CLI, the demo).

  Args:
    name: the registry key.
    fn: ``fn(x, labels, *, num_classes=None, **options) -> scalar``, higher is better, runnable
      with no keywords; its keyword-only parameters are the metric's options.
    consumes: what ``x`` is: "features" [n, d], "source_probs" [n, Cs] or "source_labels" [n].
    description: one line saying what the metric measures.
    vmappable: whether ``fn`` can be ``jax.vmap``-ped over a stack of inputs (labels fixed).
    zero_pad_exact: whether zero feature columns leave the score unchanged (the contract test
      checks the claim).
    batched: optional batched factory, see :class:`Metric`.
    bytes_per_item: optional memory estimate, see :class:`Metric`.
    across_candidates: optional set-level scorer, see :class:`Metric`.
    differentiable: whether ``jax.grad`` of ``fn`` in its first argument works on every backend
      (the metric contract test checks the claim both ways).
    overwrite: replace an existing entry instead of raising.

  Returns:
    The registered :class:`Metric`.

  Raises:
    ValueError: ``name`` is taken and ``overwrite`` is False, or ``consumes`` is unknown.
  """
  if not isinstance(name, str) or not name:
    raise ValueError(f"a metric name must be a non-empty string; got {name!r}.")
  if name in _REGISTRY and not overwrite:
    raise ValueError(f"metric {name!r} is already registered; pass overwrite=True to replace it.")
  if consumes not in CONSUMES:
    raise ValueError(f"consumes must be one of {CONSUMES}; got {consumes!r}.")
  if not callable(fn):
    raise ValueError(f"fn must be callable; got {fn!r}.")
  options, open_options = _options_of(fn)
  metric = Metric(name=name, fn=fn, consumes=consumes, description=description, options=options,
                  vmappable=vmappable, zero_pad_exact=zero_pad_exact, batched=batched,
                  bytes_per_item=bytes_per_item, open_options=open_options,
                  across_candidates=across_candidates, differentiable=bool(differentiable))
  _REGISTRY[name] = metric
  return metric


def unregister_metric(name: str) -> None:
  """Removes a registered metric (a test that registers one removes it again)."""
  if name not in _REGISTRY:
    raise ValueError(f"unknown metric {name!r}; registered: {registered_metrics()}.")
  del _REGISTRY[name]


def registered_metrics(consumes: Optional[str] = None) -> tuple:
  """Names of the registered metrics, sorted; only those of one family with ``consumes``."""
  if consumes is not None and consumes not in CONSUMES:
    raise ValueError(f"consumes must be one of {CONSUMES}; got {consumes!r}.")
  return tuple(sorted(k for k, m in _REGISTRY.items()
                      if consumes is None or m.consumes == consumes))


def get_metric(metric) -> Metric:
  """The :class:`Metric` for a registered name, a :class:`Metric`, or a plain callable.

  A plain callable is a feature metric, vmappable, not zero-pad exact; its keyword-only
  parameters are its options.
  """
  if isinstance(metric, Metric):
    return metric
  if isinstance(metric, str):
    if metric not in _REGISTRY:
      raise ValueError(f"unknown metric {metric!r}; registered: {registered_metrics()}.")
    return _REGISTRY[metric]
  if callable(metric):
    options, open_options = _options_of(metric)
    return Metric(name=getattr(metric, "__name__", "metric"), fn=metric, options=options,
                  open_options=open_options)
  raise ValueError(f"metric must be a registered name or a callable; got {metric!r}.")


def describe_metrics() -> list:
  """``[{"name", "consumes", "description", "options", "vmappable", "zero_pad_exact",
  "across_candidates", "differentiable"}]`` (``across_candidates``: whether a candidate's score
  depends on the candidate set; ``differentiable``: whether ``jax.grad`` works, on every
  backend)."""
  return [{"name": m.name, "consumes": m.consumes, "description": m.description,
           "options": dict(m.options), "vmappable": m.vmappable,
           "zero_pad_exact": m.zero_pad_exact,
           "across_candidates": m.across_candidates is not None,
           "differentiable": m.differentiable}
          for m in (_REGISTRY[k] for k in registered_metrics())]


@functools.partial(jax.custom_jvp, nondiff_argnums=(1,))
def _no_derivative(x, metric):
  del metric
  return x


@_no_derivative.defjvp
def _no_derivative_jvp(metric, primals, tangents):
  del primals, tangents
  raise ValueError(
      f"{metric} is not differentiable, on any backend (describe_metrics() says which metrics "
      "are). For a differentiable transferability score use transrate_jax.transrate or "
      "transrate_jax.transrate_loss.")


def no_derivative(x, metric: str):
  """``x`` unchanged; ``grad``/``jvp`` through it raise a ValueError naming ``metric``.

  A metric that is not differentiable on every backend calls this on its input first, so that it
  is differentiable on none: the same error on the CPU (whose host LAPACK callbacks have no
  derivative) as on a GPU or TPU (whose XLA eigensolvers would give one).
  """
  if not isinstance(x, jax.core.Tracer):  # concrete input: nothing can differentiate it
    return x
  return _no_derivative(x, metric)
