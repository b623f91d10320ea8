"""LEEP, NCE and N-LEEP (with its Gaussian-mixture EM) against float64 oracles and public code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_peers as cases
import reference
import reference_leep
from transrate_jax._src import peer_numerics
from transrate_jax._src import leep as leep_lib

REF = reference.recorded("peers_b_reference.json")


@pytest.mark.parametrize("name", sorted(cases.PROB_CASES))
@pytest.mark.branch_free
def test_leep_matches_tllib_and_oracle(name):
  theta, y = cases.make_probs(*cases.PROB_CASES[name])
  want = REF["leep_tllib"][name]
  np.testing.assert_allclose(reference_leep.leep(theta, y), want, rtol=1e-12)
  np.testing.assert_allclose(leep_lib.leep(theta, y), want, rtol=1e-12)
  got32 = leep_lib.leep(theta.astype(np.float32), y)
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, want, rtol=2e-5)


@pytest.mark.branch_free
def test_leep_jit_vmap_and_zero_source_class():
  theta, y = cases.make_probs(*cases.PROB_CASES["probs"])
  theta2 = np.array(theta)
  theta2[:, 3] = 0.0  # a source class that is never predicted
  theta2 /= theta2.sum(axis=1, keepdims=True)
  stack = jnp.stack([theta, theta2])
  got = jax.jit(jax.vmap(lambda t: leep_lib.leep(t, y, num_classes=5)))(stack)
  np.testing.assert_allclose(got, [reference_leep.leep(theta, y), reference_leep.leep(theta2, y)],
                             rtol=1e-12)
  assert np.isfinite(got).all()
  # Renaming target classes does not change the score.
  perm = np.array([2, 0, 4, 1, 3])
  np.testing.assert_allclose(leep_lib.leep(theta, perm[y]), got[0], rtol=1e-12)


def test_leep_blocked_rows_match_oracle_in_both_spaces():
  """Large enough for the row blocks of ``_per_row`` (several full blocks and a remainder):
  the linear-space and log-space sums, jitted, vmapped and differentiated, agree with the
  float64 oracle and with the unblocked formula."""
  theta, y = cases.make_probs(7, 2000, 300, 6)
  rows = leep_lib._ROW_BLOCK_ENTRIES // 300
  assert 2000 // rows >= 2 and 2000 % rows  # full blocks and a remainder
  want = reference_leep.leep(theta, y)
  tol = 1e-12 if jax.config.jax_enable_x64 else 2e-5
  np.testing.assert_allclose(leep_lib.leep(theta, y), want, rtol=tol)
  t = jnp.asarray(theta)
  log_space = jax.jit(lambda a: leep_lib._leep_from_log(jnp.log(a), a, jnp.asarray(y), 6))(t)
  np.testing.assert_allclose(log_space, want, rtol=tol)
  got = jax.vmap(lambda a: leep_lib.leep(a, y, num_classes=6))(jnp.stack([t, t]))
  np.testing.assert_allclose(got, [want, want], rtol=tol)

  def unblocked(a):
    joint = jnp.zeros((6, a.shape[1]), a.dtype).at[y].add(a)
    cond = joint / joint.sum(axis=0)
    return jnp.mean(jnp.log(jnp.sum(a * cond[y], axis=1)))

  np.testing.assert_allclose(jax.grad(lambda a: leep_lib.leep(a, y, num_classes=6))(t),
                             jax.grad(unblocked)(t), rtol=1e-4, atol=1e-9)


@pytest.mark.branch_free
def test_leep_eager_falls_back_to_log_space(monkeypatch):
  """When the linear-space sums are flagged inaccurate (a probability sum near underflow), the
  eager call returns the log-space LEEP (jitted calls choose inside the program: lax.cond)."""
  theta, y = cases.make_probs(*cases.PROB_CASES["probs"])
  kernel = leep_lib._leep_kernel
  calls = []

  def flagged(*args, **kwargs):
    score, _, stats = kernel(*args, **kwargs)
    calls.append(kwargs["choose"])
    return score * 0 + 123.0, jnp.asarray(False), stats

  monkeypatch.setattr(leep_lib, "_leep_kernel", flagged)
  tol = 1e-12 if jax.config.jax_enable_x64 else 2e-5
  np.testing.assert_allclose(leep_lib.leep(theta, y), reference_leep.leep(theta, y), rtol=tol)
  assert calls == [False]


@pytest.mark.branch_free
def test_leep_rejects_bad_probabilities():
  theta, y = cases.make_probs(*cases.PROB_CASES["probs"])
  with pytest.raises(ValueError, match="sum to 1"):
    leep_lib.leep(theta * 2, y)
  bad = theta.copy()
  bad[0, 0] = -0.1
  with pytest.raises(ValueError, match=">= 0"):
    leep_lib.leep(bad, y)
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    leep_lib.leep(bad, y)
  for value in (np.inf, -np.inf):  # caught by the one pass of min and row sums
    bad[0, 0] = value
    with pytest.raises(ValueError, match="NaN or inf"):
      leep_lib.leep(jnp.asarray(bad), y)
  off = theta.copy()
  off[7] *= 1.01  # the row farthest from 1 is named
  with pytest.raises(ValueError, match="row 7 sums to 1.01"):
    leep_lib.leep(off, y)
  with pytest.raises(ValueError, match="entries"):
    leep_lib.leep(theta, y[:-1])
  with pytest.raises(ValueError, match="num_classes"):
    jax.jit(leep_lib.leep)(theta, y)


@pytest.mark.parametrize("name", sorted(cases.HARD_CASES))
@pytest.mark.branch_free
def test_nce_matches_tllib_and_oracle(name):
  z, y = cases.make_hard(*cases.HARD_CASES[name])
  want = REF["nce_tllib"][name]
  np.testing.assert_allclose(reference_leep.nce(z, y), want, rtol=1e-12)
  np.testing.assert_allclose(leep_lib.nce(z, y), want, rtol=1e-12)
  got = jax.jit(lambda a, b: leep_lib.nce(a, b, num_classes=6, num_source_classes=30))(z, y)
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_nce_errors_and_perfect_prediction():
  y = np.array([0, 1, 2, 1, 0])
  np.testing.assert_allclose(leep_lib.nce(y + 3, y), 0.0, atol=1e-15)  # Y a function of Z
  # NCE <= 0 exactly, for any n (the host path's count sums cancel to 0 up to round-off).
  rng = np.random.default_rng(0)
  for n in (20, 999, 10007):
    z = rng.integers(0, 37, n)
    assert float(leep_lib.nce(z, (z * 5) % 11)) <= 0.0  # y a function of z: NCE = 0
    assert float(leep_lib.nce(z % 4, z % 3 + rng.integers(0, 2, n))) < 0.0
  with pytest.raises(ValueError, match="source_labels must be >= 0"):
    leep_lib.nce(-y, y)
  with pytest.raises(ValueError, match="integer"):
    leep_lib.nce(y.astype(float), y)


def _blobs(seed, n=240, k=2, num_components=3):
  rng = np.random.default_rng(seed)
  centers = 6.0 * rng.normal(size=(num_components, k))
  lab = rng.integers(0, num_components, size=n)
  x = centers[lab] + rng.normal(size=(n, k)) * (0.5 + rng.random((num_components, k))[lab])
  return x, lab


_FIT = jax.jit(lambda a, r: leep_lib._fit_gmm(a, r, max_iter=100, tol=1e-3, reg_covar=1e-6))


@pytest.mark.parametrize("init", ["kmeans++", "random"])
@pytest.mark.branch_free
def test_em_matches_sklearn(init):
  x, _ = _blobs(0)
  resp0 = leep_lib._initial_resp(jax.random.key(3), jnp.asarray(x), 3, init)
  log_resp, lower, n_iter, converged = _FIT(x, resp0)
  ref = reference_leep.sklearn_gmm(x, np.asarray(resp0))
  assert bool(converged) and ref.converged_
  assert int(n_iter) == ref.n_iter_
  np.testing.assert_allclose(lower, ref.lower_bound_, rtol=1e-10)
  np.testing.assert_allclose(np.exp(log_resp), ref.predict_proba(x), atol=1e-8)


@pytest.mark.branch_free
def test_em_float32_and_max_iter():
  x, _ = _blobs(1)
  resp0 = leep_lib._initial_resp(jax.random.key(0), jnp.asarray(x), 3, "kmeans++")
  ref = reference_leep.sklearn_gmm(x, np.asarray(resp0))
  log_resp, _, _, _ = _FIT(jnp.asarray(x, jnp.float32), resp0.astype(jnp.float32))
  assert log_resp.dtype == jnp.float32
  np.testing.assert_allclose(np.exp(log_resp), ref.predict_proba(x), atol=1e-3)
  _, _, n_iter, converged = jax.jit(
      lambda a, r: leep_lib._fit_gmm(a, r, max_iter=1, tol=1e-3, reg_covar=1e-6))(x, resp0)
  assert int(n_iter) == 1 and not bool(converged)


def _nleep_init(x, num_components, key):
  mean, evals, axes = peer_numerics.pca_eigh(jnp.asarray(x))
  k = leep_lib.num_components_for_variance(evals, 0.8)
  xp = (jnp.asarray(x) - mean) @ axes[:, :k]
  return k, leep_lib._initial_resp(key, xp, num_components, "kmeans++")


@pytest.mark.parametrize("name", ["small"])
def test_nleep_matches_sklearn_oracle(name):
  x, y = cases.feature_case(name)
  key = jax.random.key(7)
  k, resp0 = _nleep_init(x, 5 * 4, key)
  from sklearn.decomposition import PCA
  assert k == PCA(n_components=0.8, svd_solver="full").fit(x).n_components_
  want = reference_leep.nleep(x, y, np.asarray(resp0))
  np.testing.assert_allclose(leep_lib.nleep(x, y, key=key), want, rtol=1e-8)


def test_nleep_static_pca_dim_jit_vmap():
  x, y = cases.feature_case("small")
  key = jax.random.key(1)
  f = jax.jit(jax.vmap(lambda a: leep_lib.nleep(a, y, key=key, pca_dim=3, num_classes=4,
                                                components_per_class=2)))
  got = f(jnp.stack([x, 2.0 * x]))
  eager = leep_lib.nleep(x, y, key=key, pca_dim=3, components_per_class=2)
  # Scale-invariant up to the absolute reg_covar and tol.
  np.testing.assert_allclose(got, [eager, eager], rtol=1e-4)
  assert -np.log(4) - 1e-9 <= float(eager) <= 0.0
  with pytest.raises(ValueError, match="pca_dim"):
    jax.jit(lambda a: leep_lib.nleep(a, y, key=key, num_classes=4))(x)
  with pytest.raises(ValueError, match="components"):
    leep_lib.nleep(x[:10], y[:10], key=key)


def test_nleep_breakdown_raises_instead_of_nan():
  """A float32 fit on a zoo layer of large scale used to return NaN; now it raises (or is finite)."""
  from transrate_jax import zoo
  from transrate_jax.capture import intermediates
  x, y, _, _ = zoo.load_target_task()
  f = intermediates(zoo.load("mlp_l_flip10"), x, layers=["blocks/2/linear"],
                    progress=False)["blocks/2/linear"]
  try:
    score = float(leep_lib.nleep(np.asarray(f, np.float32), y, key=jax.random.key(0)))
  except ValueError as e:
    assert "broke down" in str(e)
  else:
    assert np.isfinite(score)
  assert np.isfinite(float(leep_lib.nleep(np.asarray(f, np.float64), y, key=jax.random.key(0))))


def test_nleep_default_key_in_sweeps():
  """N-LEEP's default key (None -> jax.random.key(0)) lets score_many and layer_sweep call it."""
  import transrate_jax as tj
  from transrate_jax import zoo
  from transrate_jax.capture import intermediates
  x, y, _, _ = zoo.load_target_task()
  x, y = x[:160], y[:160]
  model = zoo.load("cnn_s_digits04")
  r = tj.layer_sweep(model, x, y, layers=["blocks/1"], metrics=("nleep",), progress=False)
  f = intermediates(model, x, layers=["blocks/1"], progress=False)["blocks/1"]
  want = float(leep_lib.nleep(f, y, key=jax.random.key(0)))
  np.testing.assert_allclose(r.scores["nleep"][0], want, rtol=1e-6)
  np.testing.assert_allclose(float(leep_lib.nleep(f, y)), want, rtol=1e-12)


@pytest.mark.branch_free
def test_nce_no_dense_table_for_sparse_labels():
  """NCE counts label pairs by sorting: sparse label values allocate nothing per class pair."""
  z, y = cases.make_hard(*cases.HARD_CASES["hard"])
  want = reference_leep.nce(z, y)
  np.testing.assert_allclose(leep_lib.nce(z * 7000, y * 9000), want, rtol=1e-12)
  # The jitted (sort) path agrees; eager calls count on the host (bincount, or np.unique here).
  jitted = jax.jit(lambda a, b: leep_lib.nce(a, b, num_classes=int(y.max()) * 9000 + 1,
                                             num_source_classes=int(z.max()) * 7000 + 1))
  np.testing.assert_allclose(jitted(z * 7000, y * 9000), want, rtol=1e-12)


@pytest.mark.parametrize("num_source", [3, 40, 5000])
@pytest.mark.branch_free
def test_nce_host_counts_equal_the_compiled_sort(num_source):
  """Eager NCE (NumPy bincount, or np.unique for a large pair table) against the jitted kernel
  and the float64 oracle, with absent classes, for a dense and a sparse pair table."""
  rng = np.random.default_rng(num_source)
  n = 600
  z = rng.integers(0, num_source, n)
  y = (z * 7 + rng.integers(0, 3, n)) % 11  # a noisy function of z
  y[y == 4] = 5  # class 4 absent
  want = reference_leep.nce(z, y)
  eager = leep_lib.nce(z, y)
  assert eager.dtype == jnp.zeros(()).dtype  # JAX's default float
  jitted = jax.jit(lambda a, b: leep_lib.nce(a, b, num_classes=11,
                                             num_source_classes=num_source))(z, y)
  tol = 1e-12 if jax.config.jax_enable_x64 else 1e-6
  np.testing.assert_allclose(eager, want, rtol=tol)
  np.testing.assert_allclose(jitted, want, rtol=tol)
  batched = jax.vmap(lambda a: leep_lib.nce(a, y, num_classes=11,
                                            num_source_classes=num_source))(jnp.stack([z, z]))
  np.testing.assert_allclose(batched, [want, want], rtol=tol)
