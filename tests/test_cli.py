"""The `transrate-jax score` command line."""

import json
import subprocess
import sys

import numpy as np
import pytest

import reference
from transrate_jax._src import cli


def _run(capsys, *argv):
  code = cli.main(list(argv))
  out = capsys.readouterr()
  return code, out.out, out.err


def test_example_table(capsys):
  code, out, _ = _run(capsys, "score")
  assert code == 0
  example = np.load(cli.EXAMPLE)
  names = [k for k in example.files if k != "labels"]
  for name in names:
    assert name in out
  lines = [l for l in out.splitlines() if l.strip()[:1].isdigit()]
  assert len(lines) == len(names)
  scores = [float(l.split()[-1]) for l in lines]
  assert scores == sorted(scores, reverse=True)


def test_npz_json_matches_oracle(tmp_path, capsys):
  rng = np.random.default_rng(0)
  y = rng.integers(0, 3, 60)
  a = rng.normal(size=(60, 5)) + 2 * np.eye(5)[y]
  b = rng.normal(size=(60, 5))
  np.savez(tmp_path / "f.npz", labels=y, good=a, noise=b)
  code, out, _ = _run(capsys, "score", str(tmp_path / "f.npz"), "--json", "--eps", "1e-3",
                      "--preset", "tllib")
  assert code == 0
  result = json.loads(out)
  assert [r["name"] for r in result["scores"]] == ["good", "noise"]
  for r, f in zip(result["scores"], (a, b)):
    np.testing.assert_allclose(r["transrate"], reference.transrate(f, y, 1e-3, preset="tllib"),
                               rtol=1e-10)


def test_npy_pairs(tmp_path, capsys):
  rng = np.random.default_rng(1)
  y = rng.integers(0, 4, 40)
  np.save(tmp_path / "labels.npy", y)
  np.save(tmp_path / "layer1.npy", rng.normal(size=(40, 3)))
  np.save(tmp_path / "layer2.npy", rng.normal(size=(40, 6)))
  code, out, _ = _run(capsys, "score", str(tmp_path / "layer1.npy"), str(tmp_path / "layer2.npy"),
                      "--labels", str(tmp_path / "labels.npy"), "--weighting", "uniform")
  assert code == 0 and "layer1" in out and "layer2" in out


@pytest.mark.parametrize("setup,message", [
    (lambda p: np.savez(p / "x.npz", a=np.ones((4, 2))), "no labels"),
    (lambda p: np.savez(p / "x.npz", labels=np.array([0, 1, 0, 1])), "no feature arrays"),
    (lambda p: np.savez(p / "x.npz", labels=np.array([0, 1, 0]), a=np.ones((4, 2))),
     "labels has 3 entries but the features have 4 rows"),
    (lambda p: np.savez(p / "x.npz", labels=np.array([0, 1, 0, 1]), a=np.ones(4)), "2-D"),
    (lambda p: np.savez(p / "x.npz", labels=np.array([0, 1, 0, 1]),
                        a=np.array([{}, {}, {}, {}], dtype=object)), "pickling"),
    (lambda p: (p / "x.npz").write_bytes(b"not a zip file"), "not a readable"),
])
def test_bad_files_one_line_error(tmp_path, capsys, setup, message):
  setup(tmp_path)
  code, out, err = _run(capsys, "score", str(tmp_path / "x.npz"))
  assert code == 2
  assert message in err
  assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_console_script_runs():
  proc = subprocess.run([sys.executable, "-m", "transrate_jax._src.cli", "score", "--json"],
                        capture_output=True, text=True, timeout=300, check=True)
  assert json.loads(proc.stdout)["scores"]


def test_metrics_regression_multilabel(tmp_path, capsys):
  import transrate_jax as tj
  rng = np.random.default_rng(2)
  f = rng.normal(size=(80, 6))
  y = rng.integers(0, 3, 80)
  np.savez(tmp_path / "c.npz", labels=y, a=f, b=f[:, :3])
  code, out, _ = _run(capsys, "score", str(tmp_path / "c.npz"), "--metric", "transrate,lfc",
                      "--json")
  assert code == 0
  rows = {r["name"]: r for r in json.loads(out)["scores"]}
  np.testing.assert_allclose(rows["a"]["lfc"], float(tj.lfc(f, y)), rtol=1e-10)
  np.testing.assert_allclose(rows["b"]["transrate"], reference.transrate(f[:, :3], y), rtol=1e-10)

  t = f[:, 0] + 0.1 * rng.normal(size=80)
  np.savez(tmp_path / "r.npz", labels=t, a=f)
  code, out, _ = _run(capsys, "score", str(tmp_path / "r.npz"), "--regression", "--bins", "4",
                      "--json")
  assert code == 0
  np.testing.assert_allclose(json.loads(out)["scores"][0]["transrate"],
                             float(tj.transrate_regression(f, t, bins=4).score), rtol=1e-10)

  m = (rng.random((80, 3)) < 0.4).astype(np.int8)
  np.savez(tmp_path / "m.npz", labels=m, a=f)
  code, out, _ = _run(capsys, "score", str(tmp_path / "m.npz"), "--multilabel", "--json")
  assert code == 0
  np.testing.assert_allclose(json.loads(out)["scores"][0]["transrate"],
                             float(tj.transrate_multilabel(f, m).score), rtol=1e-10)
  code, _, err = _run(capsys, "score", str(tmp_path / "c.npz"), "--metric", "nope")
  assert code == 2 and "unknown metric" in err
