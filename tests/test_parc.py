"""PARC against float64 oracles and the public code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_peers as cases
import reference
import reference_parc
from transrate_jax._src import parc as parc_lib

REF = reference.recorded("peers_b_reference.json")

@pytest.mark.parametrize("name", ["small", "parc_pca"])
def test_parc_matches_oracle(name):
  x, y = cases.feature_case(name)
  want = reference_parc.parc(x, y)
  np.testing.assert_allclose(parc_lib.parc(x, y), want, rtol=1e-9)
  if name == "small":
    got32 = parc_lib.parc(x.astype(np.float32), y)
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, want, rtol=1e-4)

def test_parc_matches_dbolya():
  x, y = cases.feature_case("parc_pca")
  # The reference's randomised PCA approximates the exact one used here.
  np.testing.assert_allclose(parc_lib.parc(x, y), REF["parc_dbolya"]["parc_pca"], rtol=1e-5)

def test_parc_ties_jit_vmap():
  x, y = cases.feature_case("small")
  x = np.concatenate([x, x[:10]])  # duplicated rows: tied correlations
  y = np.concatenate([y, y[:10]])
  want = reference_parc.parc(x, y, pca_dim=6)
  got = jax.jit(jax.vmap(lambda a: parc_lib.parc(a, y, pca_dim=6, num_classes=4)))(
      jnp.stack([x, 2.0 * x]))
  np.testing.assert_allclose(got, [want, want], rtol=1e-7)
  with pytest.raises(ValueError, match="pca_dim"):
    parc_lib.parc(x, y, pca_dim=-1)
