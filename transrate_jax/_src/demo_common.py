"""What the two demos share: their metric lists, prediction scores, ending and strict JSON.

``transrate-jax demo`` (:mod:`transrate_jax._src.demo`, real backbones) and ``transrate-jax demo
--zoo`` (:mod:`transrate_jax._src.zoo_demo`, the digits zoo) both import this module; ``demo``
re-exports its names (``demo.feature_metrics`` and the rest), and hands ``--zoo`` over to
``zoo_demo``, which therefore must not import ``demo``.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

__all__ = ("ALL", "feature_metrics", "finish", "finite_or_none", "prediction_metrics",
           "prediction_score", "resolve_metrics")

# ``--metrics all`` (``metrics=("all",)``): every registered metric.
ALL = "all"


def feature_metrics() -> list:
  """The registered metrics that take features (sorted by name)."""
  from transrate_jax._src import registry  # noqa: PLC0415
  return list(registry.registered_metrics("features"))


def prediction_metrics() -> list:
  """The registered metrics that take the backbone's own ImageNet predictions (LEEP, NCE)."""
  from transrate_jax._src import registry  # noqa: PLC0415
  return list(registry.registered_metrics("source_probs")
              + registry.registered_metrics("source_labels"))


def resolve_metrics(metrics, default) -> tuple:
  """``(feature metrics, prediction metrics)`` a demo scores, in the order asked.

  Args:
    metrics: metric names, None (``default``) or ``["all"]`` (every registered metric, feature
      metrics first, TransRate first among them).
    default: the names used for None.

  Raises:
    ValueError: an unknown name, or an empty list.
  """
  feats, preds = feature_metrics(), prediction_metrics()
  if metrics is None:
    wanted = list(default)
  elif [m.strip() for m in metrics] == [ALL]:
    wanted = sorted(feats, key=lambda m: m != "transrate") + preds
  else:
    wanted = [m.strip() for m in metrics]
  unknown = sorted(set(wanted) - set(feats) - set(preds))
  if unknown:
    raise ValueError(f"unknown metric(s) {unknown}; choose from {', '.join(feats + preds)} "
                     f"or {ALL!r}.")
  if not wanted:
    raise ValueError(f"no metric given; choose from {', '.join(feats + preds)} or {ALL!r}.")
  wanted = list(dict.fromkeys(wanted))
  return [m for m in wanted if m in feats], [m for m in wanted if m in preds]


def prediction_score(metric: str, logits: np.ndarray, labels) -> float:
  """A prediction metric of the source logits: their softmax (LEEP) or their argmax (NCE)."""
  from transrate_jax._src import registry  # noqa: PLC0415
  spec = registry.get_metric(metric)
  x = _softmax(logits) if spec.consumes == "source_probs" else np.asarray(logits).argmax(1)
  return float(spec.fn(x, labels))


def _softmax(logits: np.ndarray) -> np.ndarray:
  z = logits - logits.max(axis=1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(axis=1, keepdims=True)


def finish(out: Dict, report, draw, *, plot_path: Optional[str], verbose: bool) -> Dict:
  """The end of a demo (the real backbones' and the zoo's): report, figure, time taken."""
  if verbose:
    report()
  if plot_path:
    try:
      draw(out, plot_path)
      out["plot"] = plot_path
      if verbose:
        print(f"\nfigure: {plot_path}")
    except ImportError as e:
      if verbose:
        print(f"\n(no figure: {e})")
  if verbose:
    print(f"done in {out['seconds']:.1f} s")
  return out


def finite_or_none(x):
  """``x`` with every non-finite float replaced by None (strict JSON)."""
  if isinstance(x, dict):
    return {k: finite_or_none(v) for k, v in x.items()}
  if isinstance(x, (list, tuple)):
    return [finite_or_none(v) for v in x]
  if isinstance(x, (float, np.floating)):
    return float(x) if np.isfinite(x) else None
  if isinstance(x, np.integer):
    return int(x)
  if isinstance(x, np.bool_):
    return bool(x)
  return x
