"""Strips outputs, execution counts and cell metadata from the Colab notebooks.

The notebooks under colab/ are stored without outputs (tests/test_notebooks.py checks it).

Usage:
  python scripts/strip_notebooks.py [NOTEBOOK ...]          # default: colab/*.ipynb, in place
  python scripts/strip_notebooks.py --check [NOTEBOOK ...]  # exit 1 if any would change
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import nbformat

ROOT = pathlib.Path(__file__).resolve().parents[1]


def strip(nb) -> bool:
  """Strips ``nb`` in place; returns whether anything changed."""
  changed = False
  for cell in nb.cells:
    if cell.get("metadata"):
      cell.metadata = {}
      changed = True
    if cell.cell_type == "code":
      if cell.get("outputs"):
        cell.outputs = []
        changed = True
      if cell.get("execution_count") is not None:
        cell.execution_count = None
        changed = True
  # Keep only the notebook metadata Colab needs (kernel, language, accelerator).
  keep = {k: v for k, v in nb.metadata.items()
          if k in ("kernelspec", "language_info", "accelerator", "colab")}
  if "language_info" in keep and set(keep["language_info"]) != {"name"}:
    keep["language_info"] = {"name": keep["language_info"].get("name", "python")}
  if keep != dict(nb.metadata):
    nb.metadata = keep
    changed = True
  return changed


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("notebooks", nargs="*", type=pathlib.Path)
  parser.add_argument("--check", action="store_true", help="only report; exit 1 if unstripped")
  args = parser.parse_args(argv)
  paths = args.notebooks or sorted((ROOT / "colab").glob("*.ipynb"))
  dirty = []
  for path in paths:
    nb = nbformat.read(path, as_version=4)
    if strip(nb):
      dirty.append(path)
      if not args.check:
        nbformat.write(nb, path)
  for path in dirty:
    print(f"{'unstripped' if args.check else 'stripped'}: {path}")
  return 1 if (args.check and dirty) else 0


if __name__ == "__main__":
  sys.exit(main())
