"""Leave-one-out k-NN accuracy against a float64 oracle and transformer-ranker's numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_knn as cases
import reference
import reference_knn
from transrate_jax._src import knn as knn_lib
from transrate_jax._src import registry

REF = reference.recorded("knn_reference.json")

# Float32 must reproduce float64 exactly when no row's k-th and (k+1)-th distances are this close.
_GAP_32 = 2e-5


def _f1_of_class_1(pred, y):
  tp = np.sum((pred == 1) & (y == 1))
  return 2 * tp / (2 * tp + np.sum((pred == 1) & (y == 0)) + np.sum((pred == 0) & (y == 1)))


@pytest.mark.parametrize("name,metric,k", cases.GRID)
def test_matches_transformer_ranker_and_oracle(name, metric, k):
  x, y = cases.CASES[name]()
  n = len(y)
  want = REF["knn_transformer_ranker"][cases.key(name, metric, k)]  # float32 (torchmetrics)
  oracle_pred = reference_knn.predictions(x, y, k, metric)
  pred = np.asarray(knn_lib.knn_predictions(x, y, k=k, metric=metric))
  np.testing.assert_array_equal(pred, oracle_pred)
  got = knn_lib.knn_accuracy(x, y, k=k, metric=metric)
  assert got.dtype == jnp.float64
  count = int(np.sum(oracle_pred == y))
  assert float(got) == count / n == reference_knn.knn_accuracy(x, y, k, metric)
  if REF["num_classes_present"][name] == 2:
    # transformer-ranker reports torchmetrics' binary F1 (of class 1) for two classes.
    assert abs(_f1_of_class_1(pred, y) - want) < 1e-7
    assert float(got) != pytest.approx(want)  # ... which is not the accuracy here
  else:
    assert round(want * n) == count and abs(want - count / n) < 1e-7  # micro F1 = accuracy
  if k != 5:  # float32 on a subset: each (shape, k, dtype) compiles its own program
    return
  got32 = knn_lib.knn_accuracy(x.astype(np.float32), y, k=k, metric=metric)
  assert got32.dtype == jnp.float32
  if reference_knn.kth_gap(x, k, metric) > _GAP_32:
    assert float(got32) == np.float32(count / n)
  else:  # a near-tie at the k-th place may resolve differently: at most a few samples move
    assert abs(float(got32) - count / n) <= 3 / n


@pytest.mark.parametrize("metric", ["cosine", "euclidean"])
def test_blockwise_equals_dense(metric):
  x, y = cases.CASES["imbalanced"]()
  n = len(y)  # 120
  dense = np.asarray(knn_lib.knn_predictions(x, y, k=5, metric=metric, block_size=n))
  np.testing.assert_array_equal(dense, reference_knn.predictions(x, y, 5, metric))
  for block in (1, 7, 50, 4 * n):  # 7 and 50 do not divide 120
    got = knn_lib.knn_predictions(x, y, k=5, metric=metric, block_size=block)
    np.testing.assert_array_equal(got, dense, err_msg=f"block_size={block}")
  x32 = x.astype(np.float32)
  np.testing.assert_array_equal(knn_lib.knn_predictions(x32, y, k=5, metric=metric, block_size=7),
                                knn_lib.knn_predictions(x32, y, k=5, metric=metric, block_size=n))


def test_memory_stays_per_block():
  """The compiled program holds [block, n] scores, never [n, n] (n = 4000, block = 256)."""
  n = 4000
  x = jnp.zeros((n, 16), jnp.float32)
  y = jnp.zeros(n, jnp.int32)
  lowered = knn_lib._knn_predict_kernel.lower(x, y, k=5, metric="euclidean", block_size=256)
  stats = lowered.compile().memory_analysis()
  if stats is None:
    pytest.skip("no memory analysis on this backend")
  assert stats.temp_size_in_bytes < n * n * 4 / 4, stats


def test_jit_and_vmap():
  x, y = cases.CASES["three"]()
  stack = np.stack([x, np.cos(x), x[:, ::-1] * 3.0])
  for metric in ("cosine", "euclidean"):
    each = [reference_knn.knn_accuracy(s, y, 5, metric) for s in stack]
    f = jax.jit(jax.vmap(lambda a, m=metric: knn_lib.knn_accuracy(
        a, y, num_classes=3, metric=m, block_size=16)))
    np.testing.assert_array_equal(np.asarray(f(jnp.asarray(stack))), each)
    g = jax.jit(lambda a, m=metric: knn_lib.knn_accuracy(a, y, num_classes=3, metric=m))
    assert float(g(x)) == each[0]
    # Traced labels with num_classes work too.
    h = jax.jit(lambda a, lab, m=metric: knn_lib.knn_accuracy(a, lab, num_classes=3, metric=m))
    assert float(h(x, y)) == each[0]
  with pytest.raises(ValueError, match="num_classes"):
    jax.jit(lambda a, lab: knn_lib.knn_accuracy(a, lab))(x, y)


def test_ties_follow_the_documented_rules():
  """Equal distances: lower index first; equal votes: the smallest label."""
  # 1-D points with mean 0 (centring is exact): every distance and every score is exact in binary.
  x = np.array([[0.0], [1.0], [-1.0], [3.0], [4.0], [-7.0]])
  y = np.array([0, 1, 0, 1, 0, 1])
  # k = 1: sample 0 has samples 1 and 2 at distance 1 -> sample 1 (label 1); 1 -> 0; 2 -> 0;
  # 3 -> 4; 4 -> 3; 5 -> 2.
  want1 = [1, 0, 0, 0, 1, 0]
  # k = 2: sample 0 sees labels {1, 0} -> 0 (vote tie); 1: sample 0, then 2 and 3 tie at
  # distance 2 -> 2: {0, 0} -> 0; 2: {0, 1} -> 0; 3: samples 4, 1 -> {0, 1} -> 0; 4: samples
  # 3, 1 -> 1; 5: samples 2, 0 -> 0.
  want2 = [0, 0, 0, 0, 1, 0]
  for dtype in (np.float64, np.float32):
    xd = x.astype(dtype)
    for k, want in ((1, want1), (2, want2)):
      np.testing.assert_array_equal(reference_knn.predictions(x, y, k, "euclidean"), want)
      np.testing.assert_array_equal(knn_lib.knn_predictions(xd, y, k=k, metric="euclidean"),
                                    want)
      if dtype == np.float32:
        f = jax.jit(lambda a, k=k: knn_lib.knn_predictions(a, y, k=k, metric="euclidean",
                                                           num_classes=2, block_size=4))
        np.testing.assert_array_equal(f(xd), want)
    assert float(knn_lib.knn_accuracy(xd, y, k=1, metric="euclidean")) == pytest.approx(1 / 6)
    assert float(knn_lib.knn_accuracy(xd, y, k=2, metric="euclidean")) == pytest.approx(2 / 6)
  # Cosine, with a zero row (similarity 0 to all: its neighbours all tie, distance 1) and
  # parallel rows (distance exactly 0).
  xc = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])
  yc = np.array([0, 0, 1, 1, 0])
  # k = 1: 0 -> 1 (all tie); 1 -> 2; 2 -> 1; 3 -> 4; 4 -> 3.
  want_c = [0, 1, 0, 0, 1]
  for dtype in (np.float64, np.float32):
    np.testing.assert_array_equal(
        knn_lib.knn_predictions(xc.astype(dtype), yc, k=1, metric="cosine"), want_c)
  np.testing.assert_array_equal(reference_knn.predictions(xc, yc, 1, "cosine"), want_c)
  # k = 3 for the zero row: samples 1, 2, 3 (labels 0, 1, 1) -> 1.
  assert int(knn_lib.knn_predictions(xc, yc, k=3)[0]) == 1


@pytest.mark.parametrize("name,metric", [("three", "cosine"), ("two_classes", "cosine"),
                                         ("two_classes", "euclidean")])
def test_order_and_label_invariance(name, metric):
  x, y = cases.CASES[name]()
  assert reference_knn.vote_ties(x, y, 5, metric) == 0  # renaming may change a vote tie
  assert reference_knn.kth_gap(x, 5, metric) > 1e-6  # and reordering a distance tie
  pred = np.asarray(knn_lib.knn_predictions(x, y, metric=metric))
  perm = np.random.default_rng(0).permutation(len(y))
  np.testing.assert_array_equal(knn_lib.knn_predictions(x[perm], y[perm], metric=metric),
                                pred[perm])
  rename = np.array([2, 0, 1] if y.max() == 2 else [1, 0])
  np.testing.assert_array_equal(knn_lib.knn_predictions(x, rename[y], metric=metric),
                                rename[pred])
  assert float(knn_lib.knn_accuracy(x, rename[y], metric=metric)) == np.mean(pred == y)


def test_scale_offset_and_padding_invariance():
  x, y = cases.CASES["three"]()
  rng = np.random.default_rng(0)
  for metric in ("cosine", "euclidean"):
    base = float(knn_lib.knn_accuracy(x, y, metric=metric))
    padded = np.concatenate([x, np.zeros((len(y), 7))], axis=1)
    assert float(knn_lib.knn_accuracy(padded, y, metric=metric)) == base
    assert float(knn_lib.knn_accuracy(x * 1e-3, y, metric=metric)) == base
  base_cos = float(knn_lib.knn_accuracy(x, y, metric="cosine"))
  scales = np.exp(rng.uniform(-7, 7, size=(len(y), 1)))  # any positive scale per row
  assert float(knn_lib.knn_accuracy(x * scales, y, metric="cosine")) == base_cos
  base_euc = float(knn_lib.knn_accuracy(x, y, metric="euclidean"))
  q, _ = np.linalg.qr(rng.normal(size=(x.shape[1], x.shape[1])))
  moved = (x @ q) * 37.0 + 1e3  # rotation, global scale, offset
  assert float(knn_lib.knn_accuracy(moved, y, metric="euclidean")) == base_euc


def test_float32_extremes_and_offsets():
  x, y = cases.CASES["three"]()
  x32 = x.astype(np.float32)
  for metric in ("cosine", "euclidean"):
    base = knn_lib.knn_predictions(x32, y, metric=metric)
    np.testing.assert_array_equal(base, reference_knn.predictions(x, y, 5, metric))
    for s in (2.0 ** -120, 1e-30, 1e30, 2.0 ** 120):  # squares under/overflow in float32
      np.testing.assert_array_equal(
          knn_lib.knn_predictions(x32 * np.float32(s), y, metric=metric), base, err_msg=str(s))
  # A large common offset: the float32 input itself is rounded to ~1e-4; centring keeps the
  # norm expansion accurate, so the float32 result is the float64 one of the rounded input.
  off32 = (x + 3e3).astype(np.float32)
  want = reference_knn.predictions(off32.astype(np.float64), y, 5, "euclidean")
  np.testing.assert_array_equal(knn_lib.knn_predictions(off32, y, metric="euclidean"), want)
  # Cosine: per-row scales across the float32 range.
  rows = np.float32(2.0) ** np.random.default_rng(1).integers(-100, 100, size=(len(y), 1))
  np.testing.assert_array_equal(knn_lib.knn_predictions(x32 * rows, y), knn_lib.knn_predictions(
      x32, y))


def test_bad_inputs_raise():
  x, y = cases.CASES["three"]()
  n = len(y)
  for kw, match in (({"k": n}, "k must be smaller"), ({"k": n + 5}, "k must be smaller"),
                    ({"k": 0}, "k must be a positive"), ({"k": 2.0}, "k must be a positive"),
                    ({"k": True}, "k must be a positive"), ({"metric": "manhattan"}, "metric"),
                    ({"metric": None}, "metric"), ({"block_size": 0}, "block_size"),
                    ({"block_size": 8.0}, "block_size")):
    with pytest.raises(ValueError, match=match):
      knn_lib.knn_accuracy(x, y, **kw)
  nan = x.copy()
  nan[4, 2] = np.nan
  for bad_x, bad_y, match in ((nan, y, "NaN"), (x[:, 0], y, "2-D"),
                              (x, np.zeros(n, np.int64), "at least 2 classes"),
                              (x, y.astype(float), "integer"), (x, y[:-1], "entries"),
                              (x[:1], y[:1], "at least 2 samples")):
    with pytest.raises(ValueError, match=match):
      knn_lib.knn_accuracy(bad_x, bad_y)
  with pytest.raises(ValueError, match="num_classes"):
    knn_lib.knn_accuracy(x, y, num_classes=2)
  # k = n - 1 (every other sample votes) is the largest valid k.
  assert float(knn_lib.knn_accuracy(x, y, k=n - 1)) == reference_knn.knn_accuracy(x, y, n - 1,
                                                                                    "cosine")


def test_registered():
  spec = registry.get_metric("knn_accuracy")
  assert spec.vmappable and spec.zero_pad_exact
  assert dict(spec.options) == {"k": 5, "metric": "cosine", "block_size": 1024}
