"""Runs the examples of the documentation (used by tests/test_docs.py).

``python tests/_docs_runner.py PAGE.md [PAGE.md ...]``: the ```python blocks of each page run in order in
one namespace (a fresh one per page), as a reader would paste them; a block whose fence says
```python no-run`` is shown but not run (it needs what a test cannot have: several hosts, a
training loop of minutes). Prints one line per block and exits 1 at the first block that raises,
after printing its traceback with the page and line. A page that needs data or weight packages
that are not installed exits 3 (the test skips it and says which package).

``python tests/_docs_runner.py --doctest MODULE [MODULE ...]``: the ``>>>`` examples in the
docstrings of every public name (``MODULE.__all__``) and of their methods, as the API reference
shows them (``ELLIPSIS`` and ``NORMALIZE_WHITESPACE``; ``# doctest: +SKIP`` marks an example that
needs what the docstring does not define, such as a model).
"""

import pathlib
import re
import sys
import time
import traceback

_FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")


def code_blocks(text):
  """Fenced blocks of a Markdown page: ``[(first line number, info string, code)]``."""
  blocks, lines, i = [], text.splitlines(), 0
  while i < len(lines):
    m = _FENCE.match(lines[i])
    if not m:
      i += 1
      continue
    fence, info, start = m.group(1), m.group(2).strip(), i + 1
    end = start
    while end < len(lines) and not (lines[end].startswith(fence[0] * len(fence))
                                    and not lines[end].strip(fence[0]).strip()):
      end += 1
    blocks.append((start + 1, info, "\n".join(lines[start:end]) + "\n"))
    i = end + 1
  return blocks


def python_blocks(text):
  """The blocks to run: ``python`` fences without ``no-run``; and the count of ``no-run`` ones."""
  run, skipped = [], 0
  for line, info, code in code_blocks(text):
    words = info.split()
    if not words or words[0] != "python":
      continue
    if "no-run" in words[1:]:
      skipped += 1
    else:
      run.append((line, code))
  return run, skipped


def run_page(path):
  """Runs one page's blocks; returns 0, 1 (a block raised) or 3 (a data package is missing)."""
  path = pathlib.Path(path)
  blocks, skipped = python_blocks(path.read_text(encoding="utf-8"))
  namespace = {"__name__": "__docs__"}
  print(f"{path.name}: {len(blocks)} blocks to run, {skipped} shown only (no-run)", flush=True)
  for line, code in blocks:
    start = time.perf_counter()
    try:
      exec(compile(code, f"{path.name}, block at line {line}", "exec"), namespace)  # pylint: disable=exec-used
    except Exception as e:  # pylint: disable=broad-except
      if type(e).__name__ in ("WeightsNotInstalledError", "DatasetNotInstalledError"):
        print(f"MISSING-PACKAGE {path.name}:{line}: {e}", flush=True)
        return 3
      print(f"FAILED {path.name}, block at line {line}:", flush=True)
      traceback.print_exc()
      return 1
    print(f"  line {line}: ok ({time.perf_counter() - start:.1f} s)", flush=True)
  return 0


def run_doctests(modules):
  """Runs the docstring examples of every public name of ``modules``; returns 0 or 1."""
  import doctest  # pylint: disable=import-outside-toplevel
  import importlib  # pylint: disable=import-outside-toplevel
  finder = doctest.DocTestFinder(exclude_empty=True)
  runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
  seen, tests = set(), []
  for module in modules:
    mod = importlib.import_module(module)
    for name in mod.__all__:
      obj = getattr(mod, name)
      if id(obj) in seen or not (callable(obj) or isinstance(obj, type)):
        continue
      seen.add(id(obj))
      # module=False: also the methods of classes defined in private modules. The globals are
      # those of the public module, as if the example ran in it (as doctest does for a module).
      tests += finder.find(obj, f"{module}.{name}", module=False, globs=dict(vars(mod)))
  for test in sorted(tests, key=lambda t: t.name):
    if not test.examples:
      continue
    start = time.perf_counter()
    result = runner.run(test)
    status = "FAILED" if result.failed else "ok"
    print(f"  {test.name}: {len(test.examples)} examples {status} "
          f"({time.perf_counter() - start:.1f} s)", flush=True)
  summary = runner.summarize(verbose=False)
  print(f"doctests: {summary.attempted} examples, {summary.failed} failed", flush=True)
  return 1 if summary.failed else 0


if __name__ == "__main__":
  if sys.argv[1:2] == ["--doctest"]:
    sys.exit(run_doctests(sys.argv[2:]))
  codes = [run_page(p) for p in sys.argv[1:]]
  sys.exit(max(codes, default=0))
