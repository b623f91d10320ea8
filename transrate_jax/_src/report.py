"""Tables and figures, shared by the library (``SelectionResult``) and the apps (CLI, demos).

Nothing here imports the command line or the demos: they sit above the library and use this.
matplotlib is optional and imported only when a figure is drawn.
"""

from __future__ import annotations

from typing import Mapping, Optional, Sequence, Tuple

import numpy as np


def format_table(rows: Sequence[dict], columns: Sequence[Tuple[str, str, str]]) -> str:
  """A plain-text table: ``columns`` are (key, header, format spec); text left, numbers right."""
  cells = [[h for _, h, _ in columns]]
  for r in rows:
    cells.append([format(r[k], spec) for k, _, spec in columns])
  widths = [max(len(row[i]) for row in cells) for i in range(len(columns))]
  left = [spec == "s" for _, _, spec in columns]
  lines = []
  for j, row in enumerate(cells):
    lines.append("  ".join(c.ljust(w) if left[i] else c.rjust(w)
                           for i, (c, w) in enumerate(zip(row, widths))).rstrip())
    if j == 0:
      lines.append("  ".join("-" * w for w in widths))
  return "\n".join(lines)


def pyplot():
  """``matplotlib.pyplot``, or an ImportError that says how to install it."""
  try:
    import matplotlib.pyplot as plt  # noqa: PLC0415
  except ImportError:
    raise ImportError("plotting needs matplotlib: pip install 'transrate_jax[plot]' "
                      "(or pip install matplotlib)") from None
  return plt


def plot_selection(path: str, *, names: Sequence[str], score: Sequence[float],
                   accuracy: Sequence[float], score_label: str, accuracy_label: str, title: str,
                   sweeps: Mapping[str, Sequence[float]], sweep_xlabel: str, sweep_ylabel: str,
                   sweep_title: str, dashed: Optional[Sequence[str]] = None) -> None:
  """Two panels saved to ``path``: score against accuracy per model, and a score per layer.

  Args:
    path: the figure file (PNG, PDF, ...).
    names: model names, one per point of the left panel.
    score, accuracy: [len(names)] the score and the measured accuracy of each model.
    score_label, accuracy_label, title: the left panel's axis labels and title.
    sweeps: ``{model: [score per layer]}``, one line each on the right panel.
    sweep_xlabel, sweep_ylabel, sweep_title: the right panel's labels and title.
    dashed: models drawn with a dashed line (e.g. random-init controls).
  """
  plt = pyplot()
  dashed = set(dashed or ())
  fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(13, 4.8))
  s, acc = np.asarray(score, np.float64), np.asarray(accuracy, np.float64)
  ax0.scatter(s, acc)
  for name, xi, yi in zip(names, s, acc):
    ax0.annotate(name, (xi, yi), fontsize=7, xytext=(3, 3), textcoords="offset points")
  ax0.set_xlabel(score_label)
  ax0.set_ylabel(accuracy_label)
  ax0.set_title(title)
  ax0.grid(alpha=0.3)
  for name, values in sweeps.items():
    values = list(values)
    if values:
      ax1.plot(range(len(values)), values, marker=".", label=name,
               linestyle="--" if name in dashed else "-")
  ax1.set_xlabel(sweep_xlabel)
  ax1.set_ylabel(sweep_ylabel)
  ax1.set_title(sweep_title)
  ax1.legend(fontsize=6, ncol=2)
  ax1.grid(alpha=0.3)
  fig.tight_layout()
  fig.savefig(path, dpi=110)
  plt.close(fig)
