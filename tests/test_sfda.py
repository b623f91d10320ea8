"""SFDA against float64 oracles and the public code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_peers as cases
import reference
import reference_sfda
from transrate_jax._src import sfda as sfda_lib

REF = reference.recorded("peers_b_reference.json")

@pytest.mark.parametrize("name", ["small", "imbalanced", "pca"])
def test_sfda_matches_tencentarc_and_oracle(name):
  x, y = cases.feature_case(name)
  want = REF["sfda_tencentarc"][name]
  np.testing.assert_allclose(reference_sfda.sfda(x, y), want, rtol=1e-9)
  np.testing.assert_allclose(sfda_lib.sfda(x, y), want, rtol=1e-8)
  if name == "small":  # the low-noise cases are too ill-conditioned for float32
    got32 = sfda_lib.sfda(x.astype(np.float32), y)
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, want, rtol=1e-4)

def test_sfda_jit_vmap_empty_class_and_singular():
  x, y = cases.feature_case("small")
  got = jax.jit(jax.vmap(lambda a: sfda_lib.sfda(a, y, num_classes=4)))(jnp.stack([x, x]))
  np.testing.assert_allclose(got, [reference_sfda.sfda(x, y)] * 2, rtol=1e-8)
  y_gap = np.where(y == 3, 5, y)  # classes 3 and 4 empty
  np.testing.assert_allclose(sfda_lib.sfda(x, y_gap), sfda_lib.sfda(x, y), rtol=1e-10)
  # n - C < d with a large within-class scale: S_w' is singular in float32; stays finite.
  wide = np.random.default_rng(0).normal(size=(12, 40)).astype(np.float32) * 30
  assert np.isfinite(sfda_lib.sfda(wide, np.arange(12) % 3))


@pytest.mark.parametrize("scale", [0.03, 0.3, 1.0])
def test_sfda_float32_low_rank_features(scale):
  """Features of lower rank than their width (6 shared directions + 4 class means in 64): S_w
  has a null space, and at scale >~ 0.1 the shrinkage floor 1e-10 is below float32's
  round-off, so float32 Cholesky fails. The fallback gives the null directions their exact
  eigenvalue, the ridge, as float64 does: 1.0 here (a pseudo-inverse dropped them: 0.39)."""
  r = np.random.default_rng(0)
  y = r.integers(0, 4, 400)
  f = (r.normal(size=(400, 6)) @ r.normal(size=(6, 64)) + 0.5 * r.normal(size=(4, 64))[y]) * scale
  f32 = f.astype(np.float32)
  want = reference_sfda.sfda(f32.astype(np.float64), y)
  for got in (sfda_lib.sfda(f32, y), jax.jit(lambda a: sfda_lib.sfda(a, y, num_classes=4))(f32)):
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(float(got), want, rtol=1e-4)
