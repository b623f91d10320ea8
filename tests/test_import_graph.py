"""No import circle anywhere in ``transrate_jax``.

Every module under ``transrate_jax/`` (package ``__init__``s included) is parsed with ``ast``,
never imported, and every import of a ``transrate_jax`` module is an edge of the import graph:
module-level and function-level alike (a lazy import that closes a circle hides the circle from
the interpreter, not from the design). The graph's strongly connected components of more than
one module are the circles; each is reported with a concrete cycle and the import statements
(file, line, enclosing function) that make it.

How an import names its target:

* ``import a.b.c`` and ``from a.b.c import *`` import module ``a.b.c``; a package counts as its
  ``__init__``, and the top-level package ``transrate_jax`` (its ``__init__``, the whole public
  API) is a node like any other, so ``import transrate_jax as tj`` in library code is an edge
  to it.
* ``from a.b import x`` imports module ``a.b.x`` when ``x`` is a module (a file or a package)
  and package ``a.b`` otherwise.
* Relative imports are resolved against the importing module's package.
* Only the module an import names is an edge, not the parent packages the interpreter runs
  first: every ``from transrate_jax._src import numerics`` would otherwise be an edge to the
  public ``transrate_jax/__init__.py``, which imports nearly everything.
"""

from __future__ import annotations

import ast
import collections
import dataclasses
import pathlib
import textwrap
from typing import Dict, List, Optional, Sequence, Set, Tuple

import pytest

# The source tree next to tests/ (read, never imported).
_PACKAGE_DIR = pathlib.Path(__file__).resolve().parent.parent / "transrate_jax"


@dataclasses.dataclass(frozen=True)
class ImportSite:
  """Where one import statement sits."""

  path: str
  line: int
  function: Optional[str]  # the innermost enclosing function, None at module level
  statement: str

  def __str__(self) -> str:
    where = f"inside {self.function}()" if self.function else "at module level"
    return f"{self.path}:{self.line} ({where}): {self.statement}"


def module_files(package_dir: pathlib.Path) -> Dict[str, pathlib.Path]:
  """Maps every module name under a package directory to its file.

  Args:
    package_dir: the directory of the top-level package (holding its ``__init__.py``).

  Returns:
    ``{dotted module name: path}``; a package is named by its own name and maps to its
    ``__init__.py``.
  """
  root = package_dir.parent
  modules = {}
  for path in sorted(package_dir.rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
      parts.pop()
    if not all(p.isidentifier() for p in parts):
      continue
    modules[".".join(parts)] = path
  return modules


def _resolve(name: str, modules: Dict[str, pathlib.Path]) -> Optional[str]:
  """The longest prefix of a dotted name that is one of ``modules`` (None when none is)."""
  parts = name.split(".")
  for end in range(len(parts), 0, -1):
    prefix = ".".join(parts[:end])
    if prefix in modules:
      return prefix
  return None


class _ImportVisitor(ast.NodeVisitor):
  """Collects ``(target module, site)`` for each import of one of ``modules``."""

  def __init__(self, module: str, path: pathlib.Path, is_package: bool, source: str,
               modules: Dict[str, pathlib.Path], display_root: pathlib.Path):
    self._module = module
    self._package = module if is_package else module.rpartition(".")[0]
    self._path = path
    self._source = source
    self._modules = modules
    self._display = str(path.relative_to(display_root))
    self._functions: List[str] = []
    self.edges: List[Tuple[str, ImportSite]] = []

  def _site(self, node: ast.stmt) -> ImportSite:
    statement = ast.get_source_segment(self._source, node) or ast.dump(node)
    function = ".".join(self._functions) if self._functions else None
    return ImportSite(self._display, node.lineno, function, " ".join(statement.split()))

  def _add(self, target: Optional[str], node: ast.stmt) -> None:
    if target is not None:
      self.edges.append((target, self._site(node)))

  def _visit_function(self, node) -> None:
    self._functions.append(node.name)
    self.generic_visit(node)
    self._functions.pop()

  visit_FunctionDef = _visit_function  # noqa: N815
  visit_AsyncFunctionDef = _visit_function  # noqa: N815

  def visit_Import(self, node: ast.Import) -> None:  # noqa: N802
    for alias in node.names:
      self._add(_resolve(alias.name, self._modules), node)

  def visit_ImportFrom(self, node: ast.ImportFrom) -> None:  # noqa: N802
    if node.level:
      base_parts = self._package.split(".") if self._package else []
      if node.level > 1:
        base_parts = base_parts[:len(base_parts) - (node.level - 1)]
      base = ".".join(base_parts + ([node.module] if node.module else []))
    else:
      base = node.module or ""
    resolved = _resolve(base, self._modules)
    if resolved is None:
      return
    for alias in node.names:
      submodule = f"{base}.{alias.name}"
      if resolved == base and alias.name != "*" and submodule in self._modules:
        self._add(submodule, node)
      else:
        self._add(resolved, node)


def import_graph(
    package_dir: pathlib.Path,
) -> Dict[str, Dict[str, List[ImportSite]]]:
  """The import graph of a package, read from its source.

  Args:
    package_dir: the directory of the top-level package.

  Returns:
    ``{importer: {imported: [sites]}}`` over every module of the package (self-imports left
    out); every module is a key, also one that imports nothing.
  """
  modules = module_files(package_dir)
  display_root = package_dir.parent
  graph: Dict[str, Dict[str, List[ImportSite]]] = {}
  for module, path in modules.items():
    source = path.read_text(encoding="utf-8")
    visitor = _ImportVisitor(module, path, path.name == "__init__.py", source, modules,
                             display_root)
    visitor.visit(ast.parse(source, filename=str(path)))
    targets: Dict[str, List[ImportSite]] = collections.defaultdict(list)
    for target, site in visitor.edges:
      if target != module:
        targets[target].append(site)
    graph[module] = dict(targets)
  return graph


def strongly_connected_components(graph: Dict[str, Sequence[str]]) -> List[List[str]]:
  """Tarjan's algorithm (iterative): the strongly connected components of a directed graph.

  Args:
    graph: ``{node: successors}``; successors need not be keys.

  Returns:
    The components, each a sorted list of nodes, in the order Tarjan's algorithm closes them.
  """
  index: Dict[str, int] = {}
  low: Dict[str, int] = {}
  on_stack: Set[str] = set()
  stack: List[str] = []
  components: List[List[str]] = []
  counter = 0
  for start in sorted(graph):
    if start in index:
      continue
    work = [(start, iter(sorted(graph.get(start, ()))))]
    index[start] = low[start] = counter
    counter += 1
    stack.append(start)
    on_stack.add(start)
    while work:
      node, successors = work[-1]
      advanced = False
      for succ in successors:
        if succ not in index:
          index[succ] = low[succ] = counter
          counter += 1
          stack.append(succ)
          on_stack.add(succ)
          work.append((succ, iter(sorted(graph.get(succ, ())))))
          advanced = True
          break
        if succ in on_stack:
          low[node] = min(low[node], index[succ])
      if advanced:
        continue
      work.pop()
      if work:
        parent = work[-1][0]
        low[parent] = min(low[parent], low[node])
      if low[node] == index[node]:
        component = []
        while True:
          member = stack.pop()
          on_stack.discard(member)
          component.append(member)
          if member == node:
            break
        components.append(sorted(component))
  return components


def _shortest_cycle(graph: Dict[str, Sequence[str]], component: Sequence[str]) -> List[str]:
  """A shortest cycle through the component's first node, staying inside the component."""
  members = set(component)
  start = component[0]
  parents: Dict[str, Optional[str]] = {start: None}
  queue = collections.deque([start])
  while queue:
    node = queue.popleft()
    for succ in sorted(graph.get(node, ())):
      if succ not in members:
        continue
      if succ == start:
        path = [node]
        while parents[path[-1]] is not None:
          path.append(parents[path[-1]])
        return list(reversed(path)) + [start]
      if succ not in parents:
        parents[succ] = node
        queue.append(succ)
  raise AssertionError(f"no cycle through {start} in {component}")  # a component of >1 has one


def import_cycles(package_dir: pathlib.Path) -> List[str]:
  """Describes every import circle of a package (an empty list when there is none).

  Args:
    package_dir: the directory of the top-level package.

  Returns:
    One human-readable paragraph per strongly connected component of more than one module:
    its modules, one concrete cycle, and the import statements along that cycle and along
    every other edge inside the component.
  """
  graph = import_graph(package_dir)
  successors = {module: sorted(targets) for module, targets in graph.items()}
  reports = []
  for component in strongly_connected_components(successors):
    if len(component) < 2:
      continue
    cycle = _shortest_cycle(successors, component)
    lines = [f"import circle among {len(component)} modules: {', '.join(component)}",
             f"  e.g. {' -> '.join(cycle)}", "  imports inside the circle:"]
    members = set(component)
    for importer in component:
      for target in sorted(t for t in graph[importer] if t in members):
        for site in graph[importer][target]:
          lines.append(f"    {importer} -> {target}   [{site}]")
    reports.append("\n".join(lines))
  return reports


def test_no_import_cycle_in_transrate_jax():
  cycles = import_cycles(_PACKAGE_DIR)
  if cycles:
    pytest.fail(
        f"transrate_jax has {len(cycles)} import circle(s). Lazy imports inside functions count "
        "too: break a circle by moving the shared code into a module both sides import (or "
        "into the one module that uses it), not by deferring an import.\n\n"
        + "\n\n".join(cycles), pytrace=False)


def test_graph_sees_the_library():
  graph = import_graph(_PACKAGE_DIR)
  # The public package is a node, and its __init__ imports the core module.
  assert "transrate_jax._src.transrate" in graph["transrate_jax"]
  # `from transrate_jax._src import validation` resolves to the module, not the package.
  assert "transrate_jax._src.validation" in graph["transrate_jax._src.transrate.api"]
  assert "transrate_jax._src" not in graph["transrate_jax._src.transrate.api"]
  # `from transrate_jax._src.transrate import kernel` is an edge to the module in the package.
  assert "transrate_jax._src.transrate.kernel" in graph["transrate_jax._src.transrate.api"]
  # A lazy import inside a function is an edge (cli imports the whole public API in a function).
  sites = graph["transrate_jax._src.cli"]["transrate_jax"]
  assert any(site.function for site in sites)


def _write_package(root: pathlib.Path, files: Dict[str, str]) -> pathlib.Path:
  for name, text in files.items():
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
  return root / "pkg"


def test_checker_finds_a_planted_cycle(tmp_path):
  package_dir = _write_package(tmp_path, {
      # A package __init__ importing its own submodules is not a circle by itself.
      "pkg/__init__.py": """
          from pkg.sub import a
          from pkg.sub.b import helper
          """,
      "pkg/sub/__init__.py": "",
      "pkg/sub/a.py": """
          from pkg.sub import b
          """,
      # The circle closes through a lazy, relative import inside a function.
      "pkg/sub/b.py": """
          def helper():
            from . import c
            return c.VALUE
          """,
      "pkg/sub/c.py": """
          import json

          def value():
            from .a import b  # from a module: the edge is to pkg.sub.a
            return b

          VALUE = 1
          """,
      # A second circle, through the top-level public package.
      "pkg/tools.py": """
          import pkg as p
          """,
      "pkg/other.py": """
          from pkg import tools
          """,
  })
  graph = import_graph(package_dir)
  assert graph["pkg.sub.b"] == {"pkg.sub.c": graph["pkg.sub.b"]["pkg.sub.c"]}
  assert graph["pkg.sub.b"]["pkg.sub.c"][0].function == "helper"
  assert set(graph["pkg.sub.c"]) == {"pkg.sub.a"}
  assert set(graph["pkg"]) == {"pkg.sub.a", "pkg.sub.b"}
  assert set(graph["pkg.other"]) == {"pkg.tools"}

  cycles = import_cycles(package_dir)
  assert len(cycles) == 1, cycles
  assert "pkg.sub.a, pkg.sub.b, pkg.sub.c" in cycles[0]
  assert "e.g. pkg.sub.a -> pkg.sub.b -> pkg.sub.c -> pkg.sub.a" in cycles[0]
  assert "inside helper()" in cycles[0]

  # Importing the public package from a module it imports closes a second circle.
  (package_dir / "__init__.py").write_text("from pkg.sub import a\nfrom pkg import other\n",
                                          encoding="utf-8")
  cycles = import_cycles(package_dir)
  assert len(cycles) == 2, cycles
  assert any("pkg, pkg.other, pkg.tools" in c and "import pkg as p" in c for c in cycles)

  # Breaking both circles leaves none.
  (package_dir / "sub" / "c.py").write_text("VALUE = 1\n", encoding="utf-8")
  (package_dir / "tools.py").write_text("import json\n", encoding="utf-8")
  assert not import_cycles(package_dir)


def test_tarjan_on_small_graphs():
  graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": ["e"], "e": ["d"], "f": []}
  components = strongly_connected_components(graph)
  assert sorted(map(tuple, components)) == [("a", "b", "c"), ("d", "e"), ("f",)]
  assert _shortest_cycle(graph, ["a", "b", "c"]) == ["a", "b", "c", "a"]
