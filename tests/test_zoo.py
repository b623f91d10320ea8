"""Tests of the embedded model zoo (transrate_jax._src.zoo, transrate_jax.zoo)."""

import hashlib
import importlib.resources

import numpy as np
import pytest

from transrate_jax import zoo
from transrate_jax._src import zoo as zoo_src
from transrate_jax._src.capture import intermediates


def test_manifest_and_files():
  names = zoo.list_models()
  assert len(names) >= 8
  assert {zoo.info(n)["arch"] for n in names} == {"mlp", "cnn", "rescnn"}
  assert len({zoo.info(n)["task"] for n in names}) >= 6
  root = importlib.resources.files("transrate_jax.zoo")
  total = root.joinpath("digits.npz").stat().st_size if hasattr(root, "stat") else 0
  for name in names:
    entry = zoo.info(name)
    data = root.joinpath("weights", entry["file"]).read_bytes()
    assert hashlib.sha256(data).hexdigest() == entry["sha256"], name
    assert data[:1] != b"\x80", "pickle"  # msgpack maps start with 0x8_/0xde/0xdf
    assert entry["penultimate"] in entry["layers"]
    assert 0.0 <= entry["source_test_accuracy"] <= 1.0
    total += len(data)
  assert total < 10 * 2**20
  with pytest.raises(ValueError, match="unknown zoo model 'nope'; available: mlp_s_digits04"):
    zoo.info("nope")


def test_data_splits():
  x_tr, y_tr, x_te, y_te = zoo.load_digits()
  assert x_tr.shape[1:] == (8, 8, 1) and x_tr.dtype == np.float32
  assert 0.0 <= x_tr.min() and x_tr.max() <= 1.0
  assert set(np.unique(y_tr)) == set(range(10)) and y_tr.dtype == np.int32
  t_tr, u_tr, t_te, u_te = zoo.load_target_task()
  assert set(np.unique(u_tr)) == set(range(5)) == set(np.unique(u_te))
  assert len(t_tr) + len(t_te) == np.sum(np.concatenate(zoo.load_digits("target")[1::2]) >= 5)
  all_tr, all_y, _, _ = zoo.load_target_task("digits10")
  # Target images are disjoint from the source images.
  src = {a.tobytes() for a in np.concatenate([x_tr, x_te])}
  assert sum(a.tobytes() in src for a in all_tr) <= 2  # sklearn digits has a few duplicates
  for task in zoo_src.SOURCE_TASKS:
    a, b, c, d = zoo.load_source_task(task)
    assert len(a) == len(b) and len(c) == len(d)
    assert b.max() + 1 <= zoo_src.SOURCE_TASKS[task][1]
  with pytest.raises(ValueError, match="unknown target task"):
    zoo.load_target_task("imagenet")
  with pytest.raises(ValueError, match="split must be"):
    zoo.load_digits("train")


@pytest.mark.parametrize("name", zoo.list_models())
def test_model_reproduces_recorded_accuracy(name):
  entry = zoo.info(name)
  model = zoo.load(name)
  _, _, x_te, y_te = zoo.load_source_task(entry["task"])
  acc = zoo_src.accuracy(model, x_te, y_te)
  assert abs(acc - entry["source_test_accuracy"]) <= 1.0 / len(y_te) + 1e-9, (acc, entry)


def test_capture_on_target_task():
  name = "cnn_s_digits04"
  entry = zoo.info(name)
  model = zoo.load(name)
  x_tr, y_tr, _, _ = zoo.load_target_task()
  feats = intermediates(model, x_tr, progress=False)
  assert list(feats) == entry["layers"]
  pen = feats[entry["penultimate"]]
  assert pen.shape == (len(y_tr), entry["neck"])
  assert np.isfinite(np.asarray(pen)).all()


def test_regeneration_is_deterministic():
  config = zoo_src.ZOO["mlp_s_digits04"]
  a, acc_a = zoo_src.train(config, seed=0, epochs=2)
  b, acc_b = zoo_src.train(config, seed=0, epochs=2)
  c, _ = zoo_src.train(config, seed=1, epochs=2)
  assert zoo_src.to_bytes(a) == zoo_src.to_bytes(b) and acc_a == acc_b
  assert zoo_src.to_bytes(a) != zoo_src.to_bytes(c)
