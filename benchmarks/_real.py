"""Shared code of the real-backbone benchmarks (real_layer_selection.py, real_text.py).

For one backbone and one target task: capture the chosen layers on the target-train and
target-test inputs, score every layer with every registered feature metric, train a linear probe
on every layer (the accuracy of transferring from that layer with the backbone frozen), and
correlate each metric's ranking of the layers with the probe's.
"""

from __future__ import annotations

import time
from typing import Sequence

import numpy as np

import _protocol


def layer_table(model, x_train, y_train, x_test, y_test, *, layers: Sequence[str],
                metrics: Sequence[str], batch_size: int = 128, probe_steps: int = 300) -> dict:
  """Scores and probe accuracy of every layer in ``layers``; correlations of the scores with it.

  ``x_train``/``x_test`` are arrays or pytrees of arrays (a tokenized batch) with the samples on
  the leading axis.
  """
  from transrate_jax._src import capture  # noqa: PLC0415
  from transrate_jax._src import demo  # noqa: PLC0415
  from transrate_jax._src import probe  # noqa: PLC0415
  from transrate_jax._src import selection  # noqa: PLC0415

  t = time.perf_counter()
  tr = capture.intermediates(model, x_train, layers=list(layers), batch_size=batch_size,
                             progress=False)
  te = capture.intermediates(model, x_test, layers=list(layers), batch_size=batch_size,
                             progress=False)
  tr = {k: np.asarray(v) for k, v in tr.items()}
  te = {k: np.asarray(v) for k, v in te.items()}
  extract = time.perf_counter() - t
  t = time.perf_counter()
  res = selection.score_features(tr, y_train, metrics=list(metrics), progress=False)
  scoring = time.perf_counter() - t
  num_classes = int(max(np.max(y_train), np.max(y_test))) + 1
  t = time.perf_counter()
  acc = np.asarray([probe.linear_probe_accuracy(tr[k], y_train, te[k], y_test,
                                                num_classes=num_classes, steps=probe_steps)
                    for k in res.names])
  probing = time.perf_counter() - t
  scores = {m: np.asarray(v, np.float64) for m, v in res.scores.items()}
  return {"layers": list(res.names), "dims": list(res.dims),
          "scores": {m: s.tolist() for m, s in scores.items()}, "probe": acc.tolist(),
          "correlations": demo.correlations(scores, acc),
          "comparison": _protocol.comparison(scores, acc, names=list(res.names),
                                             widths=list(res.dims)),
          "picked": {m: res.names[int(np.nanargmax(s))] if np.any(np.isfinite(s)) else None
                     for m, s in scores.items()},
          "best_probe_layer": res.names[int(np.argmax(acc))],
          "seconds": {"extract": extract, "scoring": scoring, "probe": probing}}


def print_layer_table(title: str, table: dict) -> None:
  from transrate_jax._src.report import format_table  # noqa: PLC0415

  metrics = list(table["scores"])
  rows = [{"layer": n, "d": d, "probe": table["probe"][i],
           **{m: table["scores"][m][i] for m in metrics}}
          for i, (n, d) in enumerate(zip(table["layers"], table["dims"]))]
  print(f"\n{title}\n")
  print(format_table(rows, [("layer", "layer", "s"), ("d", "dim", "d")] +
                     [(m, m, ".4g") for m in metrics] + [("probe", "probe acc", ".3f")]))
  print(f"\nHow well each metric ranks the layers by probe accuracy (best probe layer: "
        f"{table['best_probe_layer']}), beside the width and random baselines:\n")
  print(_protocol.comparison_text(table["comparison"]))
