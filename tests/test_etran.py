"""ETran against the public code's numbers (tests/data/etran_reference.json), a float64 oracle."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_etran as cases
import reference
import reference_etran as ref_lib
from transrate_jax._src import etran as etran_lib
from transrate_jax._src import registry

REF = reference.recorded("etran_reference.json")
NAMES = sorted(cases.CASES)


@pytest.mark.parametrize("name", NAMES)
def test_terms_match_public_code_and_oracle(name):
  x, y = cases.feature_case(name)
  got = etran_lib.etran_details(x, y)
  assert got.score.dtype == jnp.float64
  want_lda = REF["lda"][name]
  np.testing.assert_allclose(ref_lib.lda(x, y), want_lda, rtol=1e-10)
  np.testing.assert_allclose(got.lda, want_lda, rtol=1e-8)
  want_energy = REF["energy"][name]
  if want_energy is None:  # n < 200: the public code averages no sample (NaN); we average one
    assert x.shape[0] < 200
    want_energy = ref_lib.energy(x)
    np.testing.assert_allclose(want_energy, np.min(np.log(np.exp(x).sum(1))), rtol=1e-12)
  else:
    np.testing.assert_allclose(ref_lib.energy(x), want_energy, rtol=1e-10)
  np.testing.assert_allclose(got.energy, want_energy, rtol=1e-8)
  np.testing.assert_allclose(got.score, want_energy + want_lda, rtol=1e-8)
  np.testing.assert_allclose(etran_lib.etran(x, y), got.score, rtol=1e-14)


@pytest.mark.parametrize("name", NAMES)
def test_float32_keeps_dtype_and_matches_oracle(name):
  x, y = cases.feature_case(name)
  got = etran_lib.etran_details(x.astype(np.float32), y)
  assert got.score.dtype == got.energy.dtype == got.lda.dtype == jnp.float32
  np.testing.assert_allclose(got.energy, ref_lib.energy(x), rtol=2e-6)
  np.testing.assert_allclose(got.lda, ref_lib.lda(x, y), rtol=1e-5)
  # Half precision is upcast to float32.
  assert etran_lib.etran(x.astype(np.float16), y).dtype == jnp.float32


@pytest.mark.parametrize("percent", cases.PERCENTS)
def test_energy_percent_matches_public_code(percent):
  x, y = cases.feature_case("many")
  got = etran_lib.etran_details(x, y, energy_percent=percent)
  np.testing.assert_allclose(got.energy, REF["energy_percent"][str(percent)], rtol=1e-8)
  np.testing.assert_allclose(got.energy, ref_lib.energy(x, percent), rtol=1e-10)
  # 0.25 % truncates to 0.2 % like the public int(10 p): 4 samples of 2000, not 5.
  if percent == 0.25:
    e = np.sort(np.log(np.exp(x).sum(1)))
    np.testing.assert_allclose(got.energy, e[:4].mean(), rtol=1e-12)


def test_scores_across_candidates_match_public_combination():
  feats, y = cases.candidate_set()
  keys = [f"m{i}" for i in range(len(feats))]
  for i, f in enumerate(feats):  # the per-candidate terms first
    d = etran_lib.etran_details(f, y)
    np.testing.assert_allclose(d.energy, REF["set"]["energy"][keys[i]], rtol=1e-8)
    np.testing.assert_allclose(d.lda, REF["set"]["lda"][keys[i]], rtol=1e-8)
  want = [REF["set"]["etran"][k] for k in keys]
  got = etran_lib.etran_scores(feats, y)
  assert got.shape == (len(feats),) and got.dtype == jnp.float64
  np.testing.assert_allclose(got, want, rtol=1e-8, atol=1e-12)
  np.testing.assert_allclose(ref_lib.etran_scores(feats, y), want, rtol=1e-10, atol=1e-14)
  # Other weights against the oracle; a jitted call (labels concrete, num_classes static).
  np.testing.assert_allclose(etran_lib.etran_scores(feats, y, energy_weight=1.0, lda_weight=2.0),
                             ref_lib.etran_scores(feats, y, 0.5, 1.0, 2.0), rtol=1e-9, atol=1e-12)
  jitted = jax.jit(lambda fs: etran_lib.etran_scores(fs, y, num_classes=3))(feats)
  np.testing.assert_allclose(jitted, want, rtol=1e-8, atol=1e-12)
  # The registry routes the candidate set through etran_scores.
  assert registry.get_metric("etran").across_candidates is etran_lib.etran_scores


def test_scores_stacked_constant_terms_and_float32():
  feats, y = cases.candidate_set()
  same = [f[:, :12] for f in feats]
  stacked = etran_lib.etran_scores(np.stack(same), y)
  np.testing.assert_allclose(stacked, ref_lib.etran_scores(same, y), rtol=1e-9, atol=1e-12)
  # One candidate, or identical candidates: every term is constant and contributes 0.
  np.testing.assert_array_equal(etran_lib.etran_scores([feats[0]], y), [0.0])
  np.testing.assert_array_equal(etran_lib.etran_scores([feats[1], feats[1]], y), [0.0, 0.0])
  got32 = etran_lib.etran_scores([f.astype(np.float32) for f in feats], y)
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, [REF["set"]["etran"][f"m{i}"] for i in range(4)], atol=2e-5)


def test_jit_and_vmap():
  x, y = cases.feature_case("small")
  stack = jnp.stack([x, 0.5 * x[::-1], x + 1.0])
  f = jax.jit(jax.vmap(lambda a: etran_lib.etran_details(a, y, num_classes=4)))
  got = f(stack)
  for i in range(3):
    s = np.asarray(stack[i])
    np.testing.assert_allclose(got.energy[i], ref_lib.energy(s), rtol=1e-10)
    np.testing.assert_allclose(got.lda[i], ref_lib.lda(s, y), rtol=1e-10)
    np.testing.assert_allclose(got.score[i], ref_lib.etran(s, y), rtol=1e-10)
  np.testing.assert_allclose(jax.jit(lambda a: etran_lib.etran(a, y, num_classes=4))(x),
                             etran_lib.etran(x, y), rtol=1e-12)
  got32 = jax.vmap(lambda a: etran_lib.etran(a, y, num_classes=4))(stack.astype(jnp.float32))
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, got.score, rtol=1e-5)


def test_invariances():
  x, y = cases.feature_case("imbalanced")
  base = etran_lib.etran_details(x, y)
  perm = np.random.default_rng(0).permutation(x.shape[0])
  np.testing.assert_allclose(etran_lib.etran(x[perm], y[perm]), base.score, rtol=1e-12)
  renamed = np.array([3, 0, 4, 1, 2])[y]
  np.testing.assert_allclose(etran_lib.etran(x, renamed), base.score, rtol=1e-12)
  # Gaps in the label set: empty classes contribute nothing.
  gapped = np.array([0, 2, 5, 6, 9])[y]
  np.testing.assert_allclose(etran_lib.etran(x, gapped, num_classes=12), base.score, rtol=1e-12)
  # The LDA term is invariant to a common offset, also in float32; the energy term is not.
  shifted = etran_lib.etran_details(x + 300.0, y)
  np.testing.assert_allclose(shifted.lda, base.lda, rtol=1e-10)
  np.testing.assert_allclose(shifted.energy, base.energy + 300.0, rtol=1e-12)
  shifted32 = etran_lib.etran_details((x + 300.0).astype(np.float32), y)
  np.testing.assert_allclose(shifted32.lda, base.lda, rtol=1e-4)
  # Classes that overlap less give a higher LDA term (the score can tell features apart).
  xs, ys = cases.make_case(7, [100, 100, 100], 16, sep=0.3)
  xb, _ = cases.make_case(7, [100, 100, 100], 16, sep=3.0)
  assert etran_lib.etran_details(xb, ys).lda > etran_lib.etran_details(xs, ys).lda + 0.3


def test_bad_inputs_raise():
  x, y = cases.feature_case("small")
  nan = x.copy()
  nan[2, 3] = np.nan
  inf = x.copy()
  inf[0, 0] = -np.inf
  bad = [
      (nan, y, {}, "NaN"), (inf, y, {}, "NaN or inf"), (x[:, 0], y, {}, "2-D"),
      (x[None], y, {}, "2-D"), (x, y[:-1], {}, "entries"), (x, y - 1, {}, ">= 0"),
      (x, y + 0.5, {}, "integer"), (x, y, {"num_classes": 3}, "num_classes"),
      (x, np.zeros_like(y), {}, "two classes|2 classes"),
      (x, y, {"energy_percent": 0.05}, "energy_percent"),
      (x, y, {"energy_percent": 200.0}, "energy_percent"),
      (x, y, {"energy_percent": "0.5"}, "energy_percent"),
      (x, y, {"energy_percent": True}, "energy_percent"),
      (x, y, {"energy_percent": float("nan")}, "energy_percent"),
      (x + 0j, y, {}, "complex"),
  ]
  for features, labels, kw, match in bad:
    with pytest.raises(ValueError, match=match):
      etran_lib.etran(features, labels, **kw)
  feats, ys = cases.candidate_set()
  with pytest.raises(ValueError, match="at least one"):
    etran_lib.etran_scores([], ys)
  with pytest.raises(ValueError, match="energy_weight"):
    etran_lib.etran_scores(feats, ys, energy_weight=float("inf"))
  with pytest.raises(ValueError, match="lda_weight"):
    etran_lib.etran_scores(feats, ys, lda_weight="x")
  with pytest.raises(ValueError, match="stacked"):
    etran_lib.etran_scores(feats[0], ys)
  with pytest.raises(ValueError, match="NaN"):
    etran_lib.etran_scores([feats[0], np.full_like(feats[1], np.nan)], ys)
  with pytest.raises(ValueError, match="entries"):
    etran_lib.etran_scores([feats[0], feats[1][:-1]], ys)
