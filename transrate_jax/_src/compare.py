"""Comparing transferability metrics the way a reviewer would trust: intervals and baselines.

A correlation between a metric's scores and fine-tuned accuracies over a dozen candidates is a
noisy number, and a metric is only interesting if it beats what needs no metric at all: ranking
the candidates by size ("How NOT to benchmark your SITE metric", arXiv 2510.06448, finds such a
static ranking beating LogME) or at random. :func:`compare_metrics` puts, for each metric, its
Pearson, Kendall and weighted tau with bootstrap intervals (as "Back to the Basics", arXiv
2405.20420, reports), optionally their mean over random candidate pools (as TELLMe), its top-1
hit and regret, beside static baselines (feature width, parameter count) and the random-ranking
band, in one table (:class:`Comparison`). :func:`transrate_eps_sensitivity` shows how much the
candidates' TransRate ranking depends on the distortion ``eps``.

Everything is generic: ``{metric: [m] scores}`` and ``[m]`` accuracies, nothing benchmark-specific.
matplotlib is optional (``Comparison.plot``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Mapping, Optional, Sequence

import jax.numpy as jnp
import numpy as np

from transrate_jax._src import evaluation
from transrate_jax._src import report
from transrate_jax._src import transrate as transrate_module

DEFAULT_EPS_GRID = (1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 2e-2)

# The correlations every row reports, with their table headers.
CORRELATIONS = (("pearson", "Pearson"), ("kendall", "Kendall"), ("weighted_tau", "weighted tau"))


def _candidate_items(features_by_candidate):
  if isinstance(features_by_candidate, Mapping):
    return list(features_by_candidate), list(features_by_candidate.values())
  feats = list(features_by_candidate)
  return [str(i) for i in range(len(feats))], feats


def _check_eps_grid(eps, default_eps) -> np.ndarray:
  grid = np.asarray(eps, np.float64)
  if grid.ndim != 1 or grid.size < 1:
    raise ValueError(f"eps must be a non-empty 1-D sequence of positive floats; got {eps!r}.")
  default = np.asarray(default_eps, np.float64)
  if default.ndim != 0:
    raise ValueError(f"default_eps must be one positive float; got {default_eps!r}.")
  for v, name in ((grid, "eps"), (default, "default_eps")):
    if not np.all(np.isfinite(v)) or np.any(v <= 0):
      raise ValueError(f"{name} must be finite and > 0; got {v.tolist()!r}.")
  return np.unique(np.append(grid, float(default)))  # sorted, duplicates removed


def transrate_eps_sensitivity(features_by_candidate, labels, *, eps=DEFAULT_EPS_GRID,
                              default_eps: float = 1e-4, **transrate_options) -> Dict[str, Any]:
  """How the candidates' TransRate ranking moves with the distortion ``eps``.

  Each candidate is scored once per candidate over the whole grid:
  ``transrate(f, labels, eps=jnp.asarray(grid), **transrate_options)`` (a vector ``eps`` costs one
  eigendecomposition per term, not one per value). Then, for each ``eps`` in the grid, Kendall's
  tau-b between the candidates' scores at that ``eps`` and at ``default_eps``:

      kendall[e] = tau_b(scores[:, e], scores[:, grid.index(default_eps)])   (1 at default_eps)

  ``default_eps`` is added to the grid if absent; the grid is sorted and de-duplicated.

  Args:
    features_by_candidate: ``{name: [n, d_i]}`` (or a sequence of [n, d_i]) features of the
      candidates on one target task; widths may differ.
    labels: [n] class labels shared by all candidates.
    eps: the grid, positive floats (default: 1e-5 to 2e-2, the range the authors swept).
    default_eps: the reference value (default 1e-4, TransRate's default).
    **transrate_options: ``weighting``, ``preset``, ``num_classes``, passed to ``transrate``.

  Returns:
    ``{"eps": [E] grid (float list), "default_eps": float, "names": [m] candidate names,
    "scores": [m, E] float64 array (row i: candidate i at each eps), "kendall": {eps: tau_b}}``.
    A Kendall entry is NaN, and its eps is listed under ``"undefined_eps"``, where the scores at
    that eps (or at the default) are all equal, so no ranking exists.

  Raises:
    ValueError: fewer than 2 candidates, a bad grid or default, or whatever ``transrate`` raises
      for a candidate's features/labels (named in the message).
  """
  grid = _check_eps_grid(eps, default_eps)
  names, feats = _candidate_items(features_by_candidate)
  if len(feats) < 2:
    raise ValueError(f"need at least 2 candidates to rank; got {len(feats)}.")
  rows = []
  for name, f in zip(names, feats):
    try:
      rows.append(np.asarray(transrate_module.transrate(f, labels, eps=jnp.asarray(grid),
                                                        **transrate_options), np.float64))
    except ValueError as err:
      raise ValueError(f"candidate {name!r}: {err}") from err
  scores = np.stack(rows)  # [m, E]
  ref = int(np.flatnonzero(grid == float(default_eps))[0])
  kendall, undefined = {}, []
  for e, value in enumerate(grid):
    col = scores[:, e]
    if np.ptp(col) == 0 or np.ptp(scores[:, ref]) == 0:
      kendall[float(value)] = float("nan")
      undefined.append(float(value))
    else:
      kendall[float(value)] = float(evaluation.kendall_tau(col, scores[:, ref]))
  return {"eps": [float(v) for v in grid], "default_eps": float(default_eps), "names": names,
          "scores": scores, "kendall": kendall, "undefined_eps": undefined}


# --------------------------------------------------------------------------------------------
# compare_metrics
# --------------------------------------------------------------------------------------------


def _interval_dict(iv) -> dict:
  return {"estimate": float(iv.estimate), "low": float(iv.low), "high": float(iv.high),
          "std": float(iv.std), "num_valid": int(iv.num_valid)}


def _why_undefined(s: np.ndarray) -> Optional[str]:
  if not np.all(np.isfinite(s)):
    return "undefined: scores contain NaN or inf"
  if np.ptp(s) == 0:
    return "undefined: constant scores"
  return None


@dataclasses.dataclass
class Comparison:
  """Metrics and baselines against the candidates' accuracies, with intervals (see compare_metrics).

  Attributes:
    rows: one dict per metric, then the baselines, each with ``name``, ``kind`` ("metric",
      "baseline" for a static ranking such as width or parameter count, "random"), ``status``
      ("ok" or why the row is undefined), ``pearson``/``kendall``/``weighted_tau`` (``{estimate,
      low, high, std, num_valid}``; for "random" the expected value and the band of random
      rankings, plus ``exact_std``), ``pooled`` (``{statistic: {mean, std, num_valid}}`` or None),
      ``top1_hit`` (bool; for "random" the probability of a hit), ``top1_regret``,
      ``relative_top_accuracy`` (for "random" their expectations under a uniform pick) and
      ``pick`` (the candidate the row ranks first).
    candidates: [m] candidate names.
    accuracies: [m] the accuracies compared against.
    confidence, num_resamples, pool_size, num_pools, seed: the settings used.
  """
  rows: list
  candidates: list
  accuracies: np.ndarray
  confidence: float
  num_resamples: int
  pool_size: Optional[int]
  num_pools: int
  seed: int

  def row(self, name: str) -> dict:
    """The row named ``name``."""
    for r in self.rows:
      if r["name"] == name:
        return r
    raise ValueError(f"no row {name!r}; rows are {[r['name'] for r in self.rows]}.")

  def best(self, statistic: str = "kendall", *, include_baselines: bool = False) -> str:
    """The metric with the highest ``statistic`` estimate (the lowest for "top1_regret").

    Args:
      statistic: "pearson", "kendall", "weighted_tau", "relative_top_accuracy" or "top1_regret".
      include_baselines: also consider the static baselines (width, params), never "random".

    Raises:
      ValueError: an unknown statistic, or no defined row to choose from.
    """
    known = [k for k, _ in CORRELATIONS] + ["relative_top_accuracy", "top1_regret"]
    if statistic not in known:
      raise ValueError(f"unknown statistic {statistic!r}; use one of {known}.")
    kinds = ("metric", "baseline") if include_baselines else ("metric",)
    best_name, best_value = None, None
    for r in self.rows:
      if r["kind"] not in kinds or r["status"] != "ok" or r[statistic] is None:
        continue
      v = r[statistic]["estimate"] if isinstance(r[statistic], dict) else r[statistic]
      v = -v if statistic == "top1_regret" else v
      if best_value is None or v > best_value:
        best_name, best_value = r["name"], v
    if best_name is None:
      raise ValueError(f"no metric has a defined {statistic}.")
    return best_name

  @classmethod
  def from_dict(cls, data: Mapping[str, Any]) -> "Comparison":
    """The :class:`Comparison` that :meth:`to_dict` gave ``data`` (e.g. read back from JSON)."""
    return cls(rows=[dict(r) for r in data["rows"]], candidates=list(data["candidates"]),
               accuracies=np.asarray(data["accuracies"], np.float64),
               confidence=data["confidence"], num_resamples=data["num_resamples"],
               pool_size=data["pool_size"], num_pools=data["num_pools"], seed=data["seed"])

  def to_dict(self) -> dict:
    """Plain Python data (floats, ints, bools, strings, None): ``json.dumps`` takes it."""
    return {"candidates": list(self.candidates),
            "accuracies": [float(a) for a in self.accuracies],
            "confidence": self.confidence, "num_resamples": self.num_resamples,
            "pool_size": self.pool_size, "num_pools": self.num_pools, "seed": self.seed,
            "rows": [_plain(r) for r in self.rows]}

  def table(self) -> str:
    """The plain-text table ``str(comparison)`` prints."""
    columns = [("name", "metric", "s"), ("kind", "kind", "s")]
    columns += [(k, h, ">s") for k, h in CORRELATIONS]
    if self.pool_size is not None:
      columns.append(("pooled", f"Kendall, pools of {self.pool_size}", ">s"))
    columns += [("top1_hit", "top-1", ">s"), ("top1_regret", "regret", ">s"),
                ("relative_top_accuracy", "rel. top acc", ">s"), ("pick", "top pick", "s"),
                ("status", "note", "s")]
    cells = []
    for r in self.rows:
      c = {"name": r["name"], "kind": r["kind"], "pick": r["pick"] or "-",
           "status": "" if r["status"] == "ok" else r["status"]}
      for k, _ in CORRELATIONS:
        c[k] = _format_interval(r[k])
      pooled = (r.get("pooled") or {}).get("kendall")
      c["pooled"] = "-" if pooled is None else f"{pooled['mean']:.2f} ± {pooled['std']:.2f}"
      hit = r["top1_hit"]
      c["top1_hit"] = ("-" if hit is None else f"p={hit:.2f}" if r["kind"] == "random"
                       else "yes" if hit else "no")
      for k in ("top1_regret", "relative_top_accuracy"):
        c[k] = "-" if r[k] is None else f"{r[k]:.4f}"
      cells.append(c)
    head = (f"{len(self.candidates)} candidates; {100 * self.confidence:g}% bootstrap "
            f"percentile intervals over {self.num_resamples} resamples of the candidates "
            f"(seed {self.seed}); the random row: expected value [band of random rankings]")
    return head + "\n" + report.format_table(cells, columns)

  def __str__(self) -> str:
    return self.table()

  def _repr_pretty_(self, printer, cycle):  # IPython
    printer.text(self.table())

  def plot(self, path: Optional[str] = None, *, statistic: str = "kendall", ax=None):
    """Horizontal bars of ``statistic`` per metric with bootstrap error bars (matplotlib).

    Metrics are solid bars, static baselines hatched grey bars, the random ranking a shaded
    band (its percentile band) with a dotted line at its expected value; undefined rows are
    labelled "n/a" at 0.

    Args:
      path: where to save the figure (PNG, PDF, ...); None to only return it.
      statistic: "pearson", "kendall" or "weighted_tau".
      ax: an existing matplotlib axes to draw on.

    Returns:
      The matplotlib ``Figure``.
    """
    if statistic not in dict(CORRELATIONS):
      raise ValueError(f"statistic must be one of {[k for k, _ in CORRELATIONS]}; got "
                       f"{statistic!r}.")
    plt = report.pyplot()
    bars = [r for r in self.rows if r["kind"] != "random"]
    if ax is None:
      fig, ax = plt.subplots(figsize=(7.0, 1.2 + 0.42 * len(bars)))
    else:
      fig = ax.figure
    for r in self.rows:
      if r["kind"] == "random" and r[statistic] is not None:
        band = r[statistic]
        ax.axvspan(band["low"], band["high"], color="0.5", alpha=0.18,
                   label=f"random ranking ({100 * self.confidence:g}% band)")
        ax.axvline(band["estimate"], color="0.35", linestyle=":", linewidth=1)
    ypos = np.arange(len(bars))[::-1]
    labelled = set()
    for y, r in zip(ypos, bars):
      iv = r[statistic]
      if r["status"] != "ok" or iv is None:
        ax.text(0.0, y, "  n/a", va="center", fontsize=8, color="0.4")
        continue
      est = iv["estimate"]
      err = [[max(est - iv["low"], 0.0)], [max(iv["high"] - est, 0.0)]]
      baseline = r["kind"] == "baseline"
      label = "static baseline" if baseline else "metric"
      ax.barh(y, est, xerr=err, height=0.6, capsize=3,
              color="0.75" if baseline else "C0", hatch="//" if baseline else None,
              edgecolor="0.3" if baseline else "C0",
              label=None if label in labelled else label)
      labelled.add(label)
    ax.set_yticks(ypos)
    ax.set_yticklabels([r["name"] for r in bars])
    ax.axvline(0.0, color="k", linewidth=0.6)
    ax.set_xlim(-1.05, 1.05)
    ax.set_xlabel(f"{dict(CORRELATIONS)[statistic]} vs accuracy "
                  f"({100 * self.confidence:g}% bootstrap interval)")
    ax.set_title(f"{len(self.candidates)} candidates: metrics against static and random "
                 "baselines")
    ax.grid(axis="x", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    if path is not None:
      fig.savefig(path, dpi=120)
    return fig


def _format_interval(iv) -> str:
  if iv is None:
    return "-"
  return f"{iv['estimate']:.2f} [{iv['low']:.2f}, {iv['high']:.2f}]"


def _plain(value):
  """``value`` with NumPy scalars/arrays turned into Python numbers and lists."""
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if isinstance(value, np.ndarray):
    return [_plain(v) for v in value.tolist()]
  if isinstance(value, (bool, np.bool_)):
    return bool(value)
  if isinstance(value, (int, np.integer)):
    return int(value)
  if isinstance(value, (float, np.floating)):
    return float(value)
  return value


def _check_accuracies(accuracies) -> np.ndarray:
  if np.ndim(accuracies) != 1:
    raise ValueError(f"accuracies must be a 1-D array [m]; got shape "
                     f"{tuple(np.shape(accuracies))}.")
  acc = np.asarray(accuracies)
  if np.iscomplexobj(acc) or not np.issubdtype(acc.dtype, np.number):
    raise ValueError(f"accuracies must be real numbers; got dtype {acc.dtype}.")
  acc = acc.astype(np.float64)
  if acc.size < 2:
    raise ValueError(f"need at least 2 candidates; got {acc.size}.")
  if not np.all(np.isfinite(acc)):
    raise ValueError("accuracies contain NaN or inf values.")
  if np.ptp(acc) == 0:
    raise ValueError("accuracies are constant: no ranking of the candidates can be evaluated.")
  return acc


def _check_candidate_vector(v, m: int, what: str) -> np.ndarray:
  if np.ndim(v) != 1 or np.shape(v)[0] != m:
    raise ValueError(f"{what} must be a 1-D array of the {m} candidates; got shape "
                     f"{tuple(np.shape(v))}.")
  arr = np.asarray(v)
  if np.iscomplexobj(arr) or not (np.issubdtype(arr.dtype, np.number)
                                  or arr.dtype == np.bool_):
    raise ValueError(f"{what} must be real numbers; got dtype {arr.dtype}.")
  return arr.astype(np.float64)


def _score_row(name, kind, s, acc, names, *, num_resamples, confidence, pool_size, num_pools,
               seed) -> dict:
  row = {"name": name, "kind": kind, "status": "ok", "pooled": None, "pick": None,
         "top1_hit": None, "top1_regret": None, "relative_top_accuracy": None}
  for k, _ in CORRELATIONS:
    row[k] = None
  why = _why_undefined(s)
  if why is not None:
    row["status"] = why
    return row
  for k, _ in CORRELATIONS:
    row[k] = _interval_dict(evaluation.bootstrap_interval(
        s, acc, statistic=k, num_resamples=num_resamples, confidence=confidence, seed=seed))
  if pool_size is not None:
    pooled = {}
    for k, _ in CORRELATIONS:
      try:
        p = evaluation.resampled_pools(s, acc, pool_size=pool_size, num_pools=num_pools,
                                       statistic=k, seed=seed)
        pooled[k] = {"mean": p.mean, "std": p.std, "num_valid": p.num_valid}
      except ValueError:  # undefined on every pool (e.g. tiny pools of tied scores)
        pooled[k] = None
    row["pooled"] = pooled
  row["top1_hit"] = bool(evaluation.top_k_hit(s, acc, k=1))
  row["top1_regret"] = float(evaluation.top1_regret(s, acc))
  if np.max(acc) > 0:
    row["relative_top_accuracy"] = float(evaluation.relative_top_accuracy(s, acc))
  row["pick"] = names[int(np.argmax(s))]
  return row


def _random_row(acc, *, num_resamples, confidence, seed) -> dict:
  row = {"name": "random", "kind": "random", "status": "ok", "pooled": None, "pick": None}
  for k, _ in CORRELATIONS:
    b = evaluation.random_baseline(acc, statistic=k, num_draws=num_resamples,
                                   confidence=confidence, seed=seed)
    row[k] = {"estimate": b.estimate, "low": b.low, "high": b.high, "std": b.std,
              "num_valid": b.num_draws, "exact_std": b.exact_std}
  # A uniformly random pick: P(hit) = #best / m, E[regret] = max - mean, E[rel] = mean / max.
  row["top1_hit"] = float(np.mean(acc == np.max(acc)))
  row["top1_regret"] = float(np.max(acc) - np.mean(acc))
  row["relative_top_accuracy"] = (float(np.mean(acc) / np.max(acc)) if np.max(acc) > 0
                                  else None)
  return row


def compare_metrics(scores_by_metric: Mapping[str, Any], accuracies, *,
                    names: Optional[Sequence[str]] = None, widths=None, param_counts=None,
                    num_resamples: int = 1000, confidence: float = 0.95,
                    pool_size: Optional[int] = None, num_pools: int = 100,
                    seed=0) -> Comparison:
  """Every metric's ranking quality with intervals, beside static and random baselines.

  For each metric (``scores_by_metric[name]``: [m] scores of the m candidates, higher is better)
  against the candidates' fine-tuned ``accuracies``:

  * Pearson, Kendall's tau-b and weighted tau, each with a bootstrap percentile interval
    (:func:`bootstrap_interval`: the candidates resampled with replacement, the same seeded
    indices for every metric, so the intervals are paired);
  * with ``pool_size``: their mean and std over ``num_pools`` random pools of ``pool_size``
    candidates (:func:`resampled_pools`);
  * top-1 hit, top-1 regret ``max(acc) - acc[argmax(score)]`` and relative top accuracy;

  and baseline rows, scored the same way: "width" (the score of a candidate is its feature width,
  when ``widths`` is given) and "params" (its parameter count, when ``param_counts`` is given) --
  static rankings that say "bigger is better" and need no target data -- and "random": the
  expected value and the percentile band of a uniformly random ranking
  (:func:`random_baseline`, ``num_resamples`` draws), with the expected hit rate, regret and
  relative accuracy of a random pick. A metric (or baseline) whose scores contain NaN/inf or are
  constant gets a row that says so instead of numbers.

  Args:
    scores_by_metric: ``{metric name: [m] scores}`` (e.g. ``SelectionResult.scores``).
    accuracies: [m] the candidates' fine-tuned accuracies (not constant).
    names: [m] candidate names (default "0".."m-1"), used for each row's top pick.
    widths: [m] feature widths, for the "width" baseline (e.g. ``SelectionResult.dims``).
    param_counts: [m] parameter counts, for the "params" baseline.
    num_resamples: bootstrap resamples, and random rankings drawn (Python int >= 1).
    confidence: coverage of the intervals and of the random band, in (0, 1).
    pool_size: candidates per resampled pool (Python int in 2..m), or None for no pools.
    num_pools: pools drawn when ``pool_size`` is given.
    seed: seed of every ``np.random.default_rng`` draw.

  Returns:
    A :class:`Comparison`: print it for the table, ``.best()``, ``.to_dict()``, ``.plot()``.

  Raises:
    ValueError: accuracies not 1-D, shorter than 2, non-finite or constant; a score vector,
      ``names``, ``widths`` or ``param_counts`` of the wrong length; a metric named like a
      baseline; bad ``num_resamples``, ``confidence``, ``pool_size`` or ``num_pools``.

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> acc = np.array([0.62, 0.70, 0.66, 0.81, 0.77, 0.74])
    >>> cmp = tj.compare_metrics({"good": acc + 0.01 * np.arange(6), "noise": np.arange(6.)[::-1]},
    ...                          acc, widths=[512, 768, 512, 2048, 1024, 768], num_resamples=200)
    >>> cmp.best()
    'good'
  """
  acc = _check_accuracies(accuracies)
  m = acc.size
  num_resamples = evaluation.validation.check_positive_int(num_resamples, "num_resamples")
  num_pools = evaluation.validation.check_positive_int(num_pools, "num_pools")
  confidence = evaluation._check_confidence(confidence)  # noqa: SLF001 (same package)
  seed = evaluation._check_seed(seed)  # noqa: SLF001
  if pool_size is not None and (not isinstance(pool_size, (int, np.integer))
                                or isinstance(pool_size, (bool, np.bool_))
                                or not 2 <= pool_size <= m):
    raise ValueError(f"pool_size must be None or a Python int in 2..{m}; got {pool_size!r}.")
  if not isinstance(scores_by_metric, Mapping) or not scores_by_metric:
    raise ValueError("scores_by_metric must be a non-empty {metric name: [m] scores} dict.")
  if names is None:
    names = [str(i) for i in range(m)]
  names = [str(n) for n in names]
  if len(names) != m:
    raise ValueError(f"names has {len(names)} entries for {m} candidates.")
  reserved = {"width", "params", "random"}
  clash = sorted(set(map(str, scores_by_metric)) & reserved)
  if clash:
    raise ValueError(f"metric names {clash} clash with the baseline rows {sorted(reserved)}.")
  entries = [(str(k), "metric", _check_candidate_vector(v, m, f"scores of {k!r}"))
             for k, v in scores_by_metric.items()]
  if widths is not None:
    entries.append(("width", "baseline", _check_candidate_vector(widths, m, "widths")))
  if param_counts is not None:
    entries.append(("params", "baseline",
                    _check_candidate_vector(param_counts, m, "param_counts")))
  opts = dict(num_resamples=num_resamples, confidence=confidence, seed=seed)
  rows = [_score_row(name, kind, s, acc, names, pool_size=pool_size, num_pools=num_pools,
                     **opts) for name, kind, s in entries]
  rows.append(_random_row(acc, **opts))
  return Comparison(rows=rows, candidates=names, accuracies=acc, confidence=confidence,
                    num_resamples=num_resamples,
                    pool_size=None if pool_size is None else int(pool_size),
                    num_pools=num_pools, seed=seed)
