"""NCTI (Wang et al., ICCV 2023) against the public code's numbers and a float64 NumPy oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_ncti
import reference
import reference_ncti
from transrate_jax._src import ncti as ncti_lib
from transrate_jax._src import registry

REF = reference.recorded("ncti_reference.json")
CASES = sorted(cases_ncti.CASES)
TERMS = ("seli", "ncc", "vc")
NO_ORACLE = {"svd_rank_deficient"}  # the oracle inverts Sw, singular there


def _assert_terms(got, want, rtol):
  for name, g in zip(TERMS, got):
    np.testing.assert_allclose(float(g), want[name], rtol=rtol, err_msg=name)


def test_reference_cases_cover_both_lda_solvers():
  solvers = {REF["cases"][c]["solver"] for c in CASES}
  assert solvers == {"svd", "eigen"}
  assert all(REF["cases"][c]["pca_solver"] == "full" for c in CASES)  # deterministic PCA


@pytest.mark.parametrize("name", CASES)
def test_terms_match_public_code_and_oracle_float64(name):
  x, y = cases_ncti.CASES[name]()
  want = REF["cases"][name]
  got = ncti_lib.ncti_terms(x, y)
  assert isinstance(got, ncti_lib.NCTITerms) and got.seli.dtype == jnp.float64
  _assert_terms(got, want, 1e-8)
  if name not in NO_ORACLE:
    _assert_terms(reference_ncti.terms(x, y), want, 1e-10)
  single = want["seli"] + want["ncc"] - want["vc"]
  np.testing.assert_allclose(float(ncti_lib.ncti(x, y)), single, rtol=1e-8)


# float32 on one case per branch and the rank-deficient one (each shape costs a compilation).
@pytest.mark.parametrize("name", ["svd_imbalanced", "eigen_heavy_shrinkage", "svd_rank_deficient"])
def test_terms_float32(name):
  x, y = cases_ncti.CASES[name]()
  got = ncti_lib.ncti_terms(x.astype(np.float32), y)
  assert all(t.dtype == jnp.float32 for t in got)
  # rank-deficient case: its seli depends on the cut of a ~1e-16 singular value.
  _assert_terms(got, REF["cases"][name], 1e-4 if name in NO_ORACLE else 2e-6)


def test_scores_match_public_combination():
  feats, y = cases_ncti.candidate_set()
  want = np.asarray(REF["candidate_set"]["scores"])
  for t, w in zip(feats, REF["candidate_set"]["terms"]):
    _assert_terms(ncti_lib.ncti_terms(t, y), w, 1e-8)
  got = ncti_lib.ncti_scores(feats, y)
  assert got.shape == (len(feats),) and got.dtype == jnp.float64
  np.testing.assert_allclose(np.asarray(got), want, atol=1e-8)
  np.testing.assert_allclose(reference_ncti.combined(feats, y), want, atol=1e-10)
  # A mapping gives the scores in its order; float32 candidates give float32 scores.
  named = {f"m{i}": f for i, f in enumerate(feats)}
  np.testing.assert_allclose(np.asarray(ncti_lib.ncti_scores(named, y)), want, atol=1e-8)
  got32 = ncti_lib.ncti_scores([f.astype(np.float32) for f in feats[:2]], y)
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got32), reference_ncti.combined(feats[:2], y), atol=1e-5)
  # The score depends on the set: dropping the best candidate changes the others' scores.
  rest = ncti_lib.ncti_scores(feats[:2] + feats[3:], y)
  assert not np.allclose(np.asarray(rest), np.delete(want, 2))


def test_single_candidate_ranking_differs_from_published_ranking():
  """Documented in ``ncti``: ranking by the un-normalised ``seli + ncc - vc`` is not the
  published ranking (here candidates 1 and 4 swap)."""
  feats, y = cases_ncti.candidate_set()
  single = np.array([float(ncti_lib.ncti(f, y)) for f in feats])
  published = np.asarray(ncti_lib.ncti_scores(feats, y))
  assert list(np.argsort(-published)) == [2, 0, 4, 1, 3]
  assert list(np.argsort(-single)) == [2, 0, 1, 3, 4]


def test_term_equal_on_every_candidate_contributes_zero():
  """The public code divides 0 by 0 (NaN for the whole set); here such a term adds 0."""
  feats, y = cases_ncti.candidate_set()
  np.testing.assert_array_equal(np.asarray(ncti_lib.ncti_scores([feats[0], feats[0]], y)), 0.0)
  got = np.asarray(ncti_lib.ncti_scores([feats[0], feats[0], feats[1]], y))
  np.testing.assert_allclose(got, reference_ncti.combined([feats[0], feats[0], feats[1]], y),
                             atol=1e-8)
  assert got[0] == got[1]


def test_jit_vmap_and_traced_labels():
  x, y = cases_ncti.CASES["svd_imbalanced"]()
  c = int(y.max()) + 1
  eager = ncti_lib.ncti_terms(x, y)
  jitted = jax.jit(lambda a: ncti_lib.ncti_terms(a, y, num_classes=c))(x)
  traced = jax.jit(lambda a, l: ncti_lib.ncti_terms(a, l, num_classes=c))(x, y)  # lax.map path
  for t in (jitted, traced):
    for g, e in zip(t, eager):
      np.testing.assert_allclose(float(g), float(e), rtol=1e-10)
  x2, _ = cases_ncti.make_case(31, [120, 70, 40, 30, 20, 20], 96, sep=0.1, scale=0.2)  # eigen
  stack = jnp.stack([x, x2, x[:, ::-1]])
  got = jax.jit(jax.vmap(lambda a: ncti_lib.ncti(a, y, num_classes=c)))(stack)
  want = [reference_ncti.single(np.asarray(s), y) for s in stack]
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9)
  got32 = jax.vmap(lambda a: ncti_lib.ncti(a, y, num_classes=c))(stack.astype(jnp.float32))
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(np.asarray(got32), want, rtol=1e-5)


def test_very_unbalanced_classes_take_the_per_class_path():
  x, y = cases_ncti.make_case(61, [250] + [4] * 12, 64, sep=0.15)  # m C > 8 n
  for g, w in zip(ncti_lib.ncti_terms(x, y), reference_ncti.terms(x, y)):
    np.testing.assert_allclose(float(g), w, rtol=1e-9)


def test_invariances_sample_order_label_renaming_absent_classes():
  x, y = cases_ncti.CASES["eigen_balanced"]()
  base = ncti_lib.ncti_terms(x, y)
  perm = np.random.default_rng(0).permutation(len(y))
  rename = np.array([3, 0, 4, 1, 2])
  gap = np.where(y == 4, 6, y)  # classes 4 and 5 absent, 8 declared
  for got in (ncti_lib.ncti_terms(x[perm], y[perm]), ncti_lib.ncti_terms(x, rename[y]),
              ncti_lib.ncti_terms(x, gap, num_classes=8)):
    for g, b in zip(got, base):
      np.testing.assert_allclose(float(g), float(b), rtol=1e-9)


@pytest.mark.parametrize("shape", [(700, 600), (520, 900)])
def test_iterative_pca_matches_exact(shape):
  """Above 512 on the smaller side, ``pca_solver='auto'`` iterates (covariance or Gram side)."""
  n, d = shape
  x, y = cases_ncti.make_case(50, [n // 5] * 5, d, sep=0.03)
  want = reference_ncti.terms(x, y)
  if n < d:
    for g, w in zip(ncti_lib.ncti_terms(x, y, pca_solver="exact"), want):
      np.testing.assert_allclose(float(g), w, rtol=1e-9)
  for g, w in zip(ncti_lib.ncti_terms(x, y), want):  # auto -> iterative
    np.testing.assert_allclose(float(g), w, rtol=1e-9)
  if n > d:
    for g, w in zip(ncti_lib.ncti_terms(x.astype(np.float32), y), want):
      np.testing.assert_allclose(float(g), w, rtol=2e-5)


def test_small_width_and_options():
  """``k = min(pca_dim, n, d)``: narrow features are rotated, not reduced."""
  x, y = cases_ncti.make_case(60, [40, 50, 30], 20, sep=0.3)
  for g, w in zip(ncti_lib.ncti_terms(x, y), reference_ncti.terms(x, y)):
    np.testing.assert_allclose(float(g), w, rtol=1e-9)
  x, y = cases_ncti.CASES["svd_balanced"]()
  got = ncti_lib.ncti_terms(x, y, pca_dim=16, variance_dim=8)
  for g, w in zip(got, reference_ncti.terms(x, y, pca_dim=16, variance_dim=8)):
    np.testing.assert_allclose(float(g), w, rtol=1e-9)


def test_bad_inputs_raise():
  x, y = cases_ncti.CASES["svd_balanced"]()
  bad = x.copy()
  bad[0, 0] = np.nan
  with pytest.raises(ValueError, match="NaN"):
    ncti_lib.ncti(bad, y)
  with pytest.raises(ValueError, match="at least 2 classes"):
    ncti_lib.ncti(x, np.zeros_like(y))
  with pytest.raises(ValueError, match="one sample"):
    ncti_lib.ncti(x[:5], np.arange(5))
  with pytest.raises(ValueError, match="constant"):
    ncti_lib.ncti(np.ones_like(x), y)
  with pytest.raises(ValueError, match="pca_dim"):
    ncti_lib.ncti(x, y, pca_dim=0)
  with pytest.raises(ValueError, match="variance_dim"):
    ncti_lib.ncti(x, y, variance_dim=2.0)
  with pytest.raises(ValueError, match="pca_solver"):
    ncti_lib.ncti(x, y, pca_solver="randomized")
  with pytest.raises(ValueError, match="labels"):
    ncti_lib.ncti(x, y[:-1])
  with pytest.raises(ValueError, match="at least 2 candidates"):
    ncti_lib.ncti_scores([x], y)
  with pytest.raises(ValueError, match="at least 2 candidates"):
    ncti_lib.ncti_scores({"a": x}, y)
  with pytest.raises(ValueError, match="features_by_candidate"):
    ncti_lib.ncti_scores(x, y)
  with pytest.raises(ValueError, match="NaN"):
    ncti_lib.ncti_scores([x, bad], y)


def test_registered_with_across_candidates():
  spec = registry.get_metric("ncti")
  assert spec.fn is ncti_lib.ncti and spec.vmappable
  assert spec.across_candidates is ncti_lib.ncti_scores
  assert set(spec.options) >= {"pca_dim", "variance_dim", "pca_solver"}
