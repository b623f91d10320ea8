"""Layer and model selection on Flax models: capture features, score them, rank, plot.

``layer_sweep`` scores every layer of one model, ``rank_models`` one layer of each of many models;
both return a :class:`SelectionResult` (a ranked table, ``best()``, ``to_dict()``, ``plot()``).
Flax is imported only when a model is captured.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from transrate_jax._src import registry
from transrate_jax._src import report
from transrate_jax._src import sweep


@dataclasses.dataclass
class SelectionResult:
  """Scores of candidates (layers of a model, or models) under one or more metrics.

  Attributes:
    names: candidate names in their natural order (call order for layers, input order for models).
    dims: feature width of each candidate.
    scores: ``{metric: [len(names)] float array}``; every metric is higher-is-better.
    kind: "layer" or "model" (used in the table and plot labels).
    layers: for models, the layer each model was scored at.
  """
  names: list
  dims: list
  scores: Dict[str, np.ndarray]
  kind: str = "layer"
  layers: Optional[list] = None

  @property
  def metrics(self) -> list:
    return list(self.scores)

  def best(self, metric: Optional[str] = None) -> str:
    """The name of the best candidate under ``metric`` (default: the first metric)."""
    metric = metric or self.metrics[0]
    if metric not in self.scores:
      raise ValueError(f"unknown metric {metric!r}; this result has {self.metrics}.")
    return self.names[int(np.nanargmax(self.scores[metric]))]

  def ranking(self, metric: Optional[str] = None) -> list:
    """Candidate names best first under ``metric`` (default: the first metric)."""
    metric = metric or self.metrics[0]
    order = np.argsort(-np.asarray(self.scores[metric]), kind="stable")
    return [self.names[i] for i in order]

  def to_dict(self) -> dict:
    """Plain Python data: ``{"kind", "names", "dims", "layers", "scores": {metric: [float]}}``."""
    return {"kind": self.kind, "names": list(self.names), "dims": [int(d) for d in self.dims],
            "layers": None if self.layers is None else list(self.layers),
            "scores": {m: [float(v) for v in s] for m, s in self.scores.items()}}

  def table(self, sort_by: Optional[str] = None) -> str:
    """A plain-text table in natural order, or best first under ``sort_by``."""
    order = range(len(self.names)) if sort_by is None else [
        self.names.index(n) for n in self.ranking(sort_by)]
    ranks = {m: {self.names[i]: r for r, i in enumerate(
        np.argsort(-np.asarray(s), kind="stable"), 1)} for m, s in self.scores.items()}
    rows, columns = [], [("name", self.kind, "s"), ("dim", "dim", "d")]
    if self.layers is not None:
      columns.insert(1, ("layer", "layer", "s"))
    for m in self.metrics:
      columns.append((m, m, ".4f"))
    first = self.metrics[0]
    columns.append(("rank", f"rank ({first})", "d"))
    for i in order:
      name = self.names[i]
      row = {"name": name, "dim": int(self.dims[i]), "rank": ranks[first][name]}
      if self.layers is not None:
        row["layer"] = self.layers[i]
      row.update({m: float(self.scores[m][i]) for m in self.metrics})
      rows.append(row)
    return report.format_table(rows, columns)

  def __str__(self) -> str:
    return self.table()

  def _repr_pretty_(self, printer, cycle):  # IPython
    printer.text(self.table())

  def plot(self, path: Optional[str] = None, *, ax=None, normalize: bool = True):
    """Score per candidate, one line per metric (matplotlib, an optional dependency).

    Args:
      path: where to save the figure (PNG, PDF, ...); None to only return it.
      ax: an existing matplotlib axes to draw on.
      normalize: rescale each metric to [0, 1] so metrics in different units share one axis.

    Returns:
      The matplotlib ``Figure``.
    """
    plt = report.pyplot()
    if ax is None:
      fig, ax = plt.subplots(figsize=(max(6.0, 0.45 * len(self.names) + 2), 4.0))
    else:
      fig = ax.figure
    x = np.arange(len(self.names))
    for m, s in self.scores.items():
      s = np.asarray(s, np.float64)
      if normalize and len(s) > 1 and np.ptp(s) > 0:
        s = (s - s.min()) / np.ptp(s)
      ax.plot(x, s, marker="o", label=m)
      best = int(np.nanargmax(s))
      ax.scatter([x[best]], [s[best]], s=120, facecolors="none", edgecolors="k")
    ax.set_xticks(x)
    ax.set_xticklabels(self.names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("score (min-max scaled)" if normalize else "score")
    ax.set_title(f"{self.kind} selection (higher is better; circle = best)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if path is not None:
      fig.savefig(path, dpi=120)
    return fig


def _metric_name(m) -> str:
  return m if isinstance(m, str) else registry.get_metric(m).name


def _route_options(metrics: Sequence, metric_options: Optional[Mapping[str, Mapping]]) -> dict:
  """``{metric name: options}``, each checked against that metric's own options."""
  names = [_metric_name(m) for m in metrics]
  metric_options = dict(metric_options or {})
  stray = sorted(set(metric_options) - set(names))
  if stray:
    raise ValueError(f"metric_options names {stray}, which is not among the metrics {names}.")
  routed = {}
  for m, name in zip(metrics, names):
    opts = metric_options.get(name, {})
    if not isinstance(opts, Mapping):
      raise ValueError(f"metric_options[{name!r}] must be a dict of options; got {opts!r}.")
    routed[name] = registry.get_metric(m).check_options(opts)
  return routed


def score_features(features: Mapping[str, Any], labels, *, metrics=("transrate",),
                   metric_options: Optional[Mapping[str, Mapping]] = None,
                   num_classes: Optional[int] = None, kind: str = "layer",
                   layers: Optional[list] = None,
                   progress: Optional[bool] = None) -> SelectionResult:
  """Scores ``{name: [n, d]}`` with each metric through :func:`score_many`; a SelectionResult."""
  if isinstance(metrics, str) or callable(metrics):
    metrics = (metrics,)
  names = list(features)
  n = {np.shape(v)[0] for v in features.values()}
  if len(n) == 1 and np.shape(labels)[0] != next(iter(n)):
    raise ValueError(f"labels has {np.shape(labels)[0]} entries but the inputs have "
                     f"{next(iter(n))} samples.")
  routed = _route_options(metrics, metric_options)
  scores = {}
  for m in metrics:
    name = _metric_name(m)
    out = sweep.score_many(m, features, labels, num_classes=num_classes, progress=progress,
                           **routed[name])
    scores[name] = np.asarray([np.asarray(out[k]) for k in names], np.float64)
  dims = [int(np.shape(features[k])[1]) for k in names]
  return SelectionResult(names=names, dims=dims, scores=scores, kind=kind, layers=layers)


def _check_lengths(inputs, labels):
  import jax  # noqa: PLC0415

  leaves = jax.tree.leaves(inputs)
  n_in = np.shape(leaves[0])[0] if leaves else 0
  if np.ndim(labels) < 1 or np.shape(labels)[0] != n_in:
    raise ValueError(f"inputs have {n_in} samples but labels has "
                     f"{np.shape(labels)[0] if np.ndim(labels) else 'no'} entries.")


def layer_sweep(model, inputs, labels, *, variables=None, layers=None, metrics=("transrate",),
                metric_options: Optional[Mapping[str, Mapping]] = None,
                num_classes: Optional[int] = None, pool: Union[str, Callable] = "mean",
                batch_size: int = 256, progress: Optional[bool] = None,
                call_kwargs: Optional[Mapping[str, Any]] = None) -> SelectionResult:
  """Scores every layer of a Flax model on a labelled target set: which layer transfers best?

  Captures each layer's output with :func:`transrate_jax.capture.intermediates` (Linen with
  ``variables``, or NNX), pools it to [n, d], and scores all layers with each metric in a few
  compiled calls (:func:`transrate_jax.score_many`). Every metric is higher-is-better.

  Args:
    model: a Linen module (pass ``variables``) or an NNX module.
    inputs: [n, ...] target inputs.
    labels: [n] target labels (class indices; or targets for a metric that takes them).
    variables: Linen variables; None for NNX.
    layers: which layers (None: all; a glob pattern, a list of names or a predicate).
    metrics: metric names (see :func:`transrate_jax.registered_metrics`) or callables.
    metric_options: ``{metric name: {option: value}}``, each metric's own options, e.g.
      ``{"transrate": {"eps": 1e-3}, "logme": {"preset": "tllib"}}``; an option the metric does
      not have (see ``tj.get_metric(name).options``), or a metric not in ``metrics``, raises.
    num_classes: C as a static Python int for every metric (default: read from the labels).
    pool: how [n, h, w, c] / [n, t, c] outputs become [n, d]: "mean", "max", "flatten", "first".
    batch_size: rows per forward pass.
    progress: progress bars: True, False, or None (default: only for long interactive work).
    call_kwargs: extra keywords of the model call (e.g. ``{"train": False}``).

  Returns:
    A :class:`SelectionResult` over layers in call order: print it for a table, ``.best()``,
    ``.to_dict()``, ``.plot("layers.png")``.

  Example:
    >>> from transrate_jax import zoo
    >>> x, y, _, _ = zoo.load_target_task()
    >>> result = layer_sweep(zoo.load("cnn_s_digits04"), x, y, progress=False)
    >>> result.best()  # doctest: +SKIP
    'blocks/1'
  """
  from transrate_jax._src import capture  # noqa: PLC0415

  _check_lengths(inputs, labels)
  feats = capture.intermediates(model, inputs, variables=variables, layers=layers, pool=pool,
                                batch_size=batch_size, progress=progress, call_kwargs=call_kwargs)
  return score_features(feats, labels, metrics=metrics, metric_options=metric_options,
                        num_classes=num_classes, kind="layer", progress=progress)


def penultimate_layer(features: Mapping[str, Any]) -> str:
  """The layer whose output feeds the model's last layer, from captured ``{name: [n, d]}``.

  The last layer to finish (call order records a module when its call returns, so an enclosing
  block comes after its sublayers) whose features differ from the model's output: the head's
  output equals the model's, so the head is skipped.
  """
  names = [k for k in features if k != "output"]
  if not names:
    raise ValueError("no layers captured besides the model's output.")
  out = np.asarray(features["output"]) if "output" in features else None
  for name in reversed(names):
    f = np.asarray(features[name])
    if out is not None and f.shape == out.shape and np.allclose(f, out):
      continue
    return name
  return names[-1]


def rank_models(models: Mapping[str, Any], inputs, labels, *, layer=None,
                metrics=("transrate",), metric_options: Optional[Mapping[str, Mapping]] = None,
                num_classes: Optional[int] = None, pool: Union[str, Callable] = "mean",
                batch_size: int = 256, progress: Optional[bool] = None) -> SelectionResult:
  """Ranks pre-trained models for a labelled target set by the transferability of one layer each.

  Args:
    models: ``{name: nnx_module}`` or ``{name: (linen_module, variables)}``.
    inputs: [n, ...] target inputs (every model must accept them).
    labels: [n] target labels.
    layer: the layer scored for each model: None (default: the penultimate output, see
      :func:`penultimate_layer`), one name for all models, or ``{model name: layer name}``.
    metrics, metric_options, num_classes, pool, batch_size, progress: as in
      :func:`layer_sweep`.

  Returns:
    A :class:`SelectionResult` over models in input order, with the layer used for each.
  """
  from transrate_jax._src import capture  # noqa: PLC0415

  _check_lengths(inputs, labels)
  if not models:
    raise ValueError("models is empty.")
  feats, used = {}, []
  for name, entry in models.items():
    module, variables = entry if isinstance(entry, tuple) else (entry, None)
    want = layer.get(name) if isinstance(layer, Mapping) else layer
    if want is None:
      captured = capture.intermediates(module, inputs, variables=variables, pool=pool,
                                       batch_size=batch_size, progress=False)
      want = penultimate_layer(captured)
    else:
      captured = capture.intermediates(module, inputs, variables=variables, layers=[want],
                                       pool=pool, batch_size=batch_size, progress=False)
    feats[name] = captured[want]
    used.append(want)
  return score_features(feats, labels, metrics=metrics, metric_options=metric_options,
                        num_classes=num_classes, kind="model", layers=used, progress=progress)
