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


def _npz(tmp_path, name="f.npz", seed=3, **extra):
  rng = np.random.default_rng(seed)
  y = rng.integers(0, 3, 60)
  arrays = dict(labels=y, a=rng.normal(size=(60, 5)) + 2 * np.eye(5)[y], b=rng.normal(size=(60, 4)))
  arrays.update(extra)
  np.savez(tmp_path / name, **arrays)
  return tmp_path / name, arrays


def _one_line_error(code, err, message):
  assert code == 2
  assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
  assert message in err, err


def test_every_registered_metric_runs_without_flags(tmp_path, capsys):
  import transrate_jax as tj
  path, arrays = _npz(tmp_path)
  y = arrays["labels"]
  softmax = lambda v: np.exp(v) / np.exp(v).sum(axis=1, keepdims=True)
  np.savez(tmp_path / "p.npz", labels=y, a=softmax(arrays["a"]), b=softmax(arrays["b"]))
  np.savez(tmp_path / "s.npz", labels=y, a=arrays["a"].argmax(1), b=arrays["b"].argmax(1))
  inputs = {"features": path, "source_probs": tmp_path / "p.npz",
            "source_labels": tmp_path / "s.npz"}
  for metric in tj.registered_metrics():
    src = inputs[tj.get_metric(metric).consumes]
    code, out, err = _run(capsys, "score", str(src), "--metric", metric, "--json")
    assert code == 0, (metric, err)
    rows = json.loads(out)["scores"]
    assert all(np.isfinite(r[metric]) for r in rows), metric
  # N-LEEP's default key is jax.random.key(0): the CLI, score_many and an explicit key agree.
  code, out, _ = _run(capsys, "score", str(path), "--metric", "nleep", "--json")
  rows = {r["name"]: r["nleep"] for r in json.loads(out)["scores"]}
  import jax
  want = float(tj.nleep(arrays["a"], y, key=jax.random.key(0)))
  np.testing.assert_allclose(rows["a"], want, rtol=1e-10)
  np.testing.assert_allclose(float(tj.score_many("nleep", {"a": arrays["a"]}, y,
                                                 progress=False)["a"]), want, rtol=1e-10)


@pytest.mark.parametrize("metric", ["", ",", " , "])
def test_empty_metric_is_one_line(tmp_path, capsys, metric):
  path, _ = _npz(tmp_path)
  code, _, err = _run(capsys, "score", str(path), "--metric", metric)
  _one_line_error(code, err, "names no metric")


def test_corrupted_npz_is_one_line(tmp_path, capsys):
  path, _ = _npz(tmp_path)
  data = bytearray(path.read_bytes())
  for i in range(200, 600):  # damage the members, keep the zip directory
    data[i] ^= 0x55
  (tmp_path / "bad.npz").write_bytes(bytes(data))
  (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:len(data) // 2])
  for name in ("bad.npz", "cut.npz"):
    code, _, err = _run(capsys, "score", str(tmp_path / name))
    _one_line_error(code, err, "not a readable")


def test_same_stem_collides(tmp_path, capsys):
  rng = np.random.default_rng(4)
  (tmp_path / "d1").mkdir()
  (tmp_path / "d2").mkdir()
  np.save(tmp_path / "d1" / "x.npy", rng.normal(size=(30, 3)))
  np.save(tmp_path / "d2" / "x.npy", rng.normal(size=(30, 3)))
  np.save(tmp_path / "labels.npy", rng.integers(0, 2, 30))
  code, _, err = _run(capsys, "score", str(tmp_path / "d1" / "x.npy"), str(tmp_path / "d2" / "x.npy"),
                      "--labels", str(tmp_path / "labels.npy"))
  _one_line_error(code, err, "both give a feature set named 'x'")
  _npz(tmp_path / "d1", name="f.npz")
  _npz(tmp_path / "d2", name="f.npz")
  code, _, err = _run(capsys, "score", str(tmp_path / "d1" / "f.npz"), str(tmp_path / "d2" / "f.npz"))
  _one_line_error(code, err, "both give a feature set named 'f/a'")


def test_conflicting_labels_are_an_error(tmp_path, capsys):
  p1, _ = _npz(tmp_path, name="one.npz", seed=5)
  p2, _ = _npz(tmp_path, name="two.npz", seed=6)
  code, _, err = _run(capsys, "score", str(p1), str(p2))
  _one_line_error(code, err, "different 'labels'")
  np.save(tmp_path / "other.npy", np.zeros(60, int))
  code, _, err = _run(capsys, "score", str(p1), "--labels", str(tmp_path / "other.npy"))
  _one_line_error(code, err, "differ")
  # The same labels in several archives are fine.
  _npz(tmp_path, name="three.npz", seed=5)
  code, out, _ = _run(capsys, "score", str(p1), str(tmp_path / "three.npz"))
  assert code == 0 and "one/a" in out and "three/a" in out


def test_json_is_strict_with_null_for_non_finite(tmp_path, capsys, monkeypatch):
  import transrate_jax as tj
  path, _ = _npz(tmp_path)
  real = tj.score_many

  def fake(metric, features, labels, **kwargs):
    out = real(metric, features, labels, **kwargs)
    return {k: (np.float64("nan") if k == "b" else v) for k, v in out.items()}

  monkeypatch.setattr(tj, "score_many", fake)
  code, out, err = _run(capsys, "score", str(path), "--json")
  assert code == 0
  assert "NaN" not in out
  rows = json.loads(out, parse_constant=lambda c: pytest.fail(f"non-strict JSON constant {c}"))
  assert [r["name"] for r in rows["scores"]] == ["a", "b"]  # non-finite last
  assert rows["scores"][1]["transrate"] is None
  assert "warning" in err and "'b'" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("argv", [["score", "--bogus"], ["score", "--eps", "abc"], ["nope"], [],
                                  ["score", "--preset", "x"]])
def test_argparse_errors_are_one_line(capsys, argv):
  code, _, err = _run(capsys, *argv)
  _one_line_error(code, err, "error:")


def test_bad_eps_is_one_line(tmp_path, capsys):
  path, _ = _npz(tmp_path)
  code, _, err = _run(capsys, "score", str(path), "--eps", "-1")
  _one_line_error(code, err, "eps")
