"""The one progress bar of the library (``tqdm.auto``: a widget in notebooks, text in a terminal).

``progress=True`` always shows it and ``progress=False`` never does. The default, ``None``, shows
it only for long interactive work: at least :data:`AUTO_MIN_STEPS` steps (or an unknown number),
and a terminal or a notebook to show it in. A short call, a script whose output goes to a file and
a test print nothing.
"""

from __future__ import annotations

import sys
from typing import Optional

# The fewest steps for which progress=None shows a bar.
AUTO_MIN_STEPS = 8


def _interactive() -> bool:
  ipython = sys.modules.get("IPython")
  if ipython is not None:  # a Jupyter or Colab kernel: stderr is not a TTY there
    shell = ipython.get_ipython()
    if shell is not None and hasattr(shell, "kernel"):
      return True
  stream = sys.stderr
  return bool(getattr(stream, "isatty", None) and stream.isatty())


def show(progress: Optional[bool], total: Optional[int]) -> bool:
  """Whether a bar over ``total`` steps is shown for the ``progress`` argument."""
  if progress is None:
    return _interactive() and (total is None or total >= AUTO_MIN_STEPS)
  if not isinstance(progress, bool):
    raise ValueError(f"progress must be True, False or None; got {progress!r}.")
  return progress


def bar(total: Optional[int], progress: Optional[bool], desc: str, unit: str = "step",
        leave: bool = True):
  """A ``tqdm`` bar over ``total`` steps, or None when it is not shown (see :func:`show`)."""
  if not show(progress, total):
    return None
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(total=total, desc=desc, unit=unit, leave=leave)


def iterate(iterable, progress: Optional[bool], desc: str, total: Optional[int] = None,
            unit: str = "batch"):
  """``iterable``, wrapped in a ``tqdm`` bar when one is shown (see :func:`show`)."""
  if not show(progress, total):
    return iterable
  from tqdm.auto import tqdm  # pylint: disable=import-outside-toplevel
  return tqdm(iterable, desc=desc, unit=unit, total=total)
