"""SFDA against float64 oracles and the public code."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_peers as cases
import reference_sfda
from transrate_jax._src import sfda as sfda_lib

REF = json.load(open(os.path.join(os.path.dirname(__file__), "data", "peers_b_reference.json")))

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
