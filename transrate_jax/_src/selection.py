"""Layer and model selection on Flax models: capture features, score them, rank, plot.

``layer_sweep`` scores every layer of one model, ``rank_models`` one layer of each of many models;
both return a :class:`SelectionResult` (a ranked table, ``best()``, ``to_dict()``, ``plot()``).
Flax is imported only when a model is captured.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Union

import jax
import numpy as np

from transrate_jax._src import backend
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import report
from transrate_jax._src import sweep
from transrate_jax._src import validation


@dataclasses.dataclass
class SelectionResult:
  """Scores of candidates (layers of a model, or models) under one or more metrics.

  Attributes:
    names: candidate names in their natural order (call order for layers, input order for models).
    dims: feature width of each candidate.
    scores: ``{metric: [len(names)] float array}``; every metric is higher-is-better.
    kind: "layer" or "model" (used in the table and plot labels).
    layers: for models, the layer each model was scored at (for ``layer="best"``: the best
      layer under the first metric; ``"mean of k layers"`` for ``layer="mean"``).
    aggregate: for a layer sweep with ``aggregate=``, the model's one score per metric
      (``{metric: float}``); None otherwise.
    layer_scores: for ``rank_models(layer="best"|"last")``, every scored layer of every model:
      ``{model: {metric: {layer: score}}}``; None otherwise.
    width_fair: the width-fair mode the scores were computed under (None: raw features).
    aggregated_by: "mean", "best" or "last" when ``aggregate`` is set.
  """
  names: list
  dims: list
  scores: Dict[str, np.ndarray]
  kind: str = "layer"
  layers: Optional[list] = None
  aggregate: Optional[Dict[str, float]] = None
  layer_scores: Optional[Dict[str, Dict[str, Dict[str, float]]]] = None
  width_fair: Union[None, int, str] = None
  aggregated_by: Optional[str] = None

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
    """Plain Python data: ``{"kind", "names", "dims", "layers", "scores": {metric: [float]},
    "aggregate", "aggregated_by", "layer_scores", "width_fair"}``."""
    return {"kind": self.kind, "names": list(self.names), "dims": [int(d) for d in self.dims],
            "layers": None if self.layers is None else list(self.layers),
            "scores": {m: [float(v) for v in s] for m, s in self.scores.items()},
            "aggregate": None if self.aggregate is None else {
                m: float(v) for m, v in self.aggregate.items()},
            "aggregated_by": self.aggregated_by, "layer_scores": self.layer_scores,
            "width_fair": self.width_fair}

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
    text = report.format_table(rows, columns)
    if self.aggregate is not None:
      text += f"\nmodel score ({self.aggregated_by} layer): " + ", ".join(
          f"{m} {v:.4f}" for m, v in self.aggregate.items())
    if self.width_fair is not None:
      text += f"\n(width-fair mode: {self.width_fair!r})"
    return text

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


AGGREGATES = ("mean", "best", "last")

# One jitted PCA projection for every call (a jit wrapper made per call would not be reused).
_pca_project = jax.jit(peer_numerics.pca_project, static_argnums=1)


def _check_width_fair(width_fair):
  if width_fair is None or width_fair == "min":
    return width_fair
  if isinstance(width_fair, str):
    raise ValueError(f"width_fair must be None, 'min' or a positive int; got {width_fair!r}.")
  return validation.check_positive_int(width_fair, "width_fair")


def width_fair_features(features: Mapping[str, Any], width_fair) -> Dict[str, np.ndarray]:
  """Every candidate reduced to the same width: its first ``p`` exact principal components.

  Raw log-determinant scores (TransRate, LogME's evidence, ...) grow with the feature width, so
  comparing a 16-wide stage with a 1280-wide head mostly ranks widths. Here each [n, d_i]
  candidate is centred and projected on its own first ``p`` principal axes (an exact eigendecomposition of
  its covariance or Gram matrix in the features' dtype, ``peer_numerics.pca_project``):

  * ``"min"``: ``p = min(min_i d_i, n - 1)``, the narrowest candidate's width: every candidate
    then has the same width;
  * an int ``p``: candidates wider than ``p`` are reduced to ``p``; narrower ones keep all their
    dimensions (rotated to their principal axes, which leaves rotation-invariant metrics as they
    were);
  * None: the features as they are.

  Args:
    features: ``{name: [n, d_i]}``.
    width_fair: None, "min" or a positive int (see above).

  Returns:
    ``{name: [n, p_i]}`` in the input dtype (half precision upcast to float32).
  """
  mode = _check_width_fair(width_fair)
  if mode is None:
    return dict(features)
  n = min(np.shape(v)[0] for v in features.values())
  widths = [np.shape(v)[1] for v in features.values()]
  p = min(min(widths), n - 1) if mode == "min" else mode
  out = {}
  for name, x in features.items():
    x = validation.check_features(x, name=f"features[{name!r}]")
    k = min(p, x.shape[1], x.shape[0] - 1)
    out[name] = np.asarray(_pca_project(x, k))
  return out


def score_features(features: Mapping[str, Any], labels, *, metrics=("transrate",),
                   metric_options: Optional[Mapping[str, Mapping]] = None,
                   num_classes: Optional[int] = None, kind: str = "layer",
                   layers: Optional[list] = None, width_fair=None,
                   progress: Optional[bool] = None) -> SelectionResult:
  """Scores ``{name: [n, d]}`` with each metric; a SelectionResult.

  Each metric scores every candidate through :func:`score_many` (one candidate at a time, in a
  few compiled programs), or, for a metric whose published score depends on the whole candidate
  set (``Metric.across_candidates``: NCTI), through that set-level scorer. ``width_fair`` first
  reduces every candidate to a common width (:func:`width_fair_features`).
  """
  if isinstance(metrics, str) or callable(metrics):
    metrics = (metrics,)
  names = list(features)
  n = {np.shape(v)[0] for v in features.values()}
  if len(n) == 1 and np.shape(labels)[0] != next(iter(n)):
    raise ValueError(f"labels has {np.shape(labels)[0]} entries but the inputs have "
                     f"{next(iter(n))} samples.")
  routed = _route_options(metrics, metric_options)
  features = width_fair_features(features, width_fair)
  scores = {}
  for m in metrics:
    name = _metric_name(m)
    spec = registry.get_metric(m)
    if spec.across_candidates is not None:
      backend.relieve_mapping_pressure()  # as score_many does before it compiles
      extra = {} if num_classes is None else {"num_classes": num_classes}
      out = spec.across_candidates([features[k] for k in names], labels, **extra,
                                   **routed[name])
      scores[name] = np.asarray(out, np.float64).reshape(len(names))
      continue
    out = sweep.score_many(m, features, labels, num_classes=num_classes, progress=progress,
                           **routed[name])
    scores[name] = np.asarray([np.asarray(out[k]) for k in names], np.float64)
  dims = [int(np.shape(features[k])[1]) for k in names]
  return SelectionResult(names=names, dims=dims, scores=scores, kind=kind, layers=layers,
                         width_fair=width_fair)


def _check_aggregate(how, *, name: str):
  if how is not None and how not in AGGREGATES:
    raise ValueError(f"{name} must be one of {AGGREGATES} or None; got {how!r}.")
  return how


def _layer_mean(features: Mapping[str, Any], where: str) -> np.ndarray:
  """The mean over layers of their [n, d] features (transformer-ranker's ``layermean``)."""
  widths = {k: np.shape(v)[1:] for k, v in features.items()}
  if len(set(widths.values())) != 1:
    raise ValueError(
        f"aggregate 'mean' averages the layers' features, which needs one width; {where} has "
        f"{dict((k, w[0]) for k, w in widths.items())}. Use 'best' or 'last', or choose layers "
        "of one width with layers=.")
  stack = [np.asarray(validation.check_features(v, name=f"features[{k!r}]"))
           for k, v in features.items()]
  return np.mean(np.stack(stack), axis=0)


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
                batch_size: int = 256, aggregate: Optional[str] = None, width_fair=None,
                progress: Optional[bool] = None,
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
    aggregate: also one score for the whole model from its layers (``result.aggregate``), as
      transformer-ranker's layer aggregators: "mean" (the score of the mean of the layers'
      features, its ``layermean``; the layers must share one width), "best" (the best layer's
      score, ``bestlayer``) or "last" (the last layer's, ``lastlayer``). The model's output
      (``"output"``, the logits) takes no part when other layers are swept. None: no aggregate.
    width_fair: None (raw features), "min" or an int: score every layer reduced to a common
      width by exact PCA (:func:`width_fair_features`), so that wide layers are not favoured
      for being wide.
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
  _check_aggregate(aggregate, name="aggregate")
  _check_width_fair(width_fair)
  feats = capture.intermediates(model, inputs, variables=variables, layers=layers, pool=pool,
                                batch_size=batch_size, progress=progress, call_kwargs=call_kwargs)
  result = score_features(feats, labels, metrics=metrics, metric_options=metric_options,
                          num_classes=num_classes, kind="layer", width_fair=width_fair,
                          progress=progress)
  if aggregate is not None:
    hidden = _hidden_layers(result.names)
    if aggregate == "mean":
      mean = {"mean": _layer_mean({k: feats[k] for k in hidden}, "this model")}
      scored = score_features(mean, labels, metrics=metrics, metric_options=metric_options,
                              num_classes=num_classes, width_fair=width_fair, progress=False)
      result.aggregate = {m: float(v[0]) for m, v in scored.scores.items()}
    else:
      index = [result.names.index(k) for k in hidden]
      result.aggregate = {m: _pick(np.asarray(v)[index], aggregate)[1]
                          for m, v in result.scores.items()}
    result.aggregated_by = aggregate
  return result


def _hidden_layers(names: Sequence[str]) -> list:
  """The layers that take part in an aggregate: all but the model's output, unless alone."""
  hidden = [k for k in names if k != "output"]
  return hidden or list(names)


def _pick(scores: np.ndarray, how: str):
  """``(index, score)`` of the best (NaN-skipping) or the last entry."""
  if how == "last":
    return len(scores) - 1, float(scores[-1])
  if not np.any(np.isfinite(scores)):
    return 0, float("nan")
  i = int(np.nanargmax(scores))
  return i, float(scores[i])


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


def rank_models(models: Mapping[str, Any], inputs, labels, *, layer=None, layers=None,
                metrics=("transrate",), metric_options: Optional[Mapping[str, Mapping]] = None,
                num_classes: Optional[int] = None, pool: Union[str, Callable] = "mean",
                batch_size: int = 256, width_fair=None,
                progress: Optional[bool] = None) -> SelectionResult:
  """Ranks pre-trained models for a labelled target set by the transferability of one layer each.

  Args:
    models: ``{name: nnx_module}`` or ``{name: (linen_module, variables)}``.
    inputs: [n, ...] target inputs (every model must accept them).
    labels: [n] target labels.
    layer: the layer scored for each model: None (default: the penultimate output, see
      :func:`penultimate_layer`), one name for all models, ``{model name: layer name}``, or an
      aggregate over the layers chosen by ``layers`` (the model's output excluded), as
      transformer-ranker's ``layer_aggregator``: "mean" (the score of the mean of the layers'
      features; one width per model), "best" (every layer of every model is scored, as one
      table, and each model gets its best layer's score: ``result.layer_scores`` keeps them all)
      or "last".
    layers: with an aggregate ``layer``, which layers take part (as in :func:`layer_sweep`;
      None: every captured layer). Ignored otherwise.
    width_fair: None, "min" or an int (see :func:`width_fair_features`): every scored feature set
      reduced to a common width first. With ``layer="best"`` the common width is over all layers
      of all models.
    metrics, metric_options, num_classes, pool, batch_size, progress: as in
      :func:`layer_sweep`.

  Returns:
    A :class:`SelectionResult` over models in input order, with the layer used for each.

  Example:
    >>> result = rank_models({"a": model_a, "b": model_b}, x, y, layer="best",
    ...                      metrics=("transrate", "logme"), width_fair="min")  # doctest: +SKIP
    >>> result.best("logme"), result.layers  # doctest: +SKIP
  """
  from transrate_jax._src import capture  # noqa: PLC0415

  _check_lengths(inputs, labels)
  if not models:
    raise ValueError("models is empty.")
  _check_width_fair(width_fair)
  how = layer if isinstance(layer, str) and layer in AGGREGATES else None
  common = dict(metrics=metrics, metric_options=metric_options, num_classes=num_classes,
                width_fair=width_fair)
  feats, used, table = {}, [], {}
  for name, entry in models.items():
    module, variables = entry if isinstance(entry, tuple) else (entry, None)
    if how is not None:
      captured = capture.intermediates(module, inputs, variables=variables, layers=layers,
                                       pool=pool, batch_size=batch_size, progress=False)
      hidden = _hidden_layers(list(captured))
      if how == "mean":
        feats[name] = _layer_mean({k: captured[k] for k in hidden}, f"model {name!r}")
        used.append(f"mean of {len(hidden)} layer{'' if len(hidden) == 1 else 's'}")
      elif how == "last":
        feats[name] = captured[hidden[-1]]
        used.append(hidden[-1])
      else:
        table[name] = {k: np.asarray(captured[k]) for k in hidden}
      continue
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
  if how != "best":
    result = score_features(feats, labels, kind="model", layers=used, progress=progress,
                            **common)
    result.aggregated_by = how
    return result
  return best_layer_per_model(table, labels, progress=progress, **common)


def best_layer_per_model(table: Mapping[str, Mapping[str, Any]], labels, *,
                         metrics=("transrate",),
                         metric_options: Optional[Mapping[str, Mapping]] = None,
                         num_classes: Optional[int] = None, width_fair=None,
                         progress: Optional[bool] = None) -> SelectionResult:
  """Models ranked by their best layer: ``table`` is ``{model: {layer: [n, d]}}``.

  Every (model, layer) is scored as one candidate set (so ``width_fair`` and set-level metrics
  see the whole table); each model's score under a metric is that of its best layer.
  """
  joint = {(m, k): v for m, layers_ in table.items() for k, v in layers_.items()}
  keys = list(joint)
  flat = score_features({f"{m}|{k}": joint[(m, k)] for m, k in keys}, labels, metrics=metrics,
                        metric_options=metric_options, num_classes=num_classes,
                        width_fair=width_fair, progress=progress)
  names = list(table)
  scores, layer_scores, used, dims = {}, {m: {} for m in names}, [], []
  for metric, values in flat.scores.items():
    col = []
    for model in names:
      idx = [i for i, (m, _) in enumerate(keys) if m == model]
      layer_scores[model][metric] = {keys[i][1]: float(values[i]) for i in idx}
      j, best = _pick(np.asarray(values)[idx], "best")
      col.append(best)
      if metric == flat.metrics[0]:
        used.append(keys[idx[j]][1])
        dims.append(int(flat.dims[idx[j]]))
    scores[metric] = np.asarray(col, np.float64)
  return SelectionResult(names=names, dims=dims, scores=scores, kind="model", layers=used,
                         layer_scores=layer_scores, width_fair=width_fair, aggregated_by="best")
