"""The Colab notebooks under colab/: stored without outputs, and each runs top to bottom.

Every notebook is executed by a real Jupyter kernel (``python3``, the interpreter running pytest)
through nbclient, at the small size (``TRANSRATE_SMALL=1``), in a temporary working directory, with
a timeout per cell and per notebook. Any cell that raises fails the test with the cell's traceback.
Notebook 03 runs with two forced host devices, so its sharded cells use a real multi-device mesh.
"""

import json
import pathlib
import re
import sys
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

COLAB = pathlib.Path(__file__).resolve().parents[1] / "colab"
NOTEBOOKS = sorted(COLAB.glob("*.ipynb"))
NAMES = [p.name for p in NOTEBOOKS]
EXPECTED = ["01_quickstart.ipynb", "02_layer_sweep.ipynb", "03_model_zoo_on_accelerators.ipynb",
            "04_regularizer.ipynb"]

CELL_TIMEOUT_S = 120  # one cell
NOTEBOOK_TIMEOUT_S = 150  # whole notebook (pytest-timeout)
# Extra environment per notebook (the kernel inherits the test process's environment).
EXTRA_ENV = {
    "03_model_zoo_on_accelerators.ipynb": {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
}


def _load(path):
  with open(path, encoding="utf-8") as f:
    return nbformat.read(f, as_version=4)


def test_all_notebooks_present():
  assert NAMES == EXPECTED


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_stored_without_outputs(path):
  nb = _load(path)
  nbformat.validate(nb)
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert code, f"{path.name} has no code cells"
  for i, cell in enumerate(code):
    assert cell.get("outputs") == [], f"{path.name}: code cell {i} has stored outputs"
    assert cell.get("execution_count") is None, f"{path.name}: code cell {i} has an execution count"
  # Cell metadata carries no execution state (Colab/Jupyter timestamps, collapsed outputs, ...).
  for i, cell in enumerate(nb.cells):
    assert not cell.get("metadata"), f"{path.name}: cell {i} has metadata {dict(cell.metadata)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_colab_setup_cell(path):
  """First code cell: installs on Colab only, and reads the SMALL flag from TRANSRATE_SMALL."""
  nb = _load(path)
  first = next(c for c in nb.cells if c.cell_type == "code").source
  assert '"google.colab" in sys.modules' in first
  assert "pip" in first and "git+" in first
  assert re.search(r'SMALL = os\.environ\.get\("TRANSRATE_SMALL", "0"\) == "1"', first)
  # An "Open in Colab" badge in the notebook and in colab/README.md.
  badge = "colab.research.google.com/github/"
  assert badge in nb.cells[0].source and path.name in nb.cells[0].source
  readme = (COLAB / "README.md").read_text(encoding="utf-8")
  assert f"/blob/main/colab/{path.name})" in readme


@pytest.mark.timeout(NOTEBOOK_TIMEOUT_S)
@pytest.mark.parametrize("path", NOTEBOOKS, ids=NAMES)
def test_notebook_runs(path, tmp_path, monkeypatch):
  monkeypatch.setenv("TRANSRATE_SMALL", "1")
  monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
  monkeypatch.setenv("TQDM_DISABLE", "1")
  for key, value in EXTRA_ENV.get(path.name, {}).items():
    monkeypatch.setenv(key, value)
  nb = _load(path)
  client = nbclient.NotebookClient(
      nb, timeout=CELL_TIMEOUT_S, kernel_name="python3", allow_errors=False,
      resources={"metadata": {"path": str(tmp_path)}})
  start = time.perf_counter()
  try:
    client.execute()
  except nbclient.exceptions.CellExecutionError as e:
    pytest.fail(f"{path.name} failed:\n{e}", pytrace=False)
  elapsed = time.perf_counter() - start
  # Every code cell ran (none skipped) and no cell wrote to stderr a traceback.
  code = [c for c in nb.cells if c.cell_type == "code"]
  assert all(c.execution_count is not None for c in code)
  for c in code:
    for out in c.outputs:
      assert out.get("output_type") != "error", json.dumps(out)[:2000]
  print(f"{path.name}: {elapsed:.1f} s ({sys.executable})")
