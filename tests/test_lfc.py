"""LFC against float64 oracles."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_peers as cases
import reference_lfc
from transrate_jax._src import lfc as lfc_lib

CASES = sorted(cases.FEATURE_CASES)

@pytest.mark.parametrize("name", CASES)
def test_lfc_matches_oracle(name):
  x, y = cases.feature_case(name)
  want = reference_lfc.lfc(x, y)
  np.testing.assert_allclose(lfc_lib.lfc(x, y), want, rtol=1e-10)
  got32 = lfc_lib.lfc(x.astype(np.float32), y)  # float32
  assert got32.dtype == jnp.float32
  np.testing.assert_allclose(got32, want, rtol=1e-4)

def test_lfc_wide_jit_vmap_and_invariances():
  x, y = cases.feature_case("pca")
  x, y = x[:40], y[:40]  # n < d: Gram side
  want = reference_lfc.lfc(x, y)
  got = jax.jit(jax.vmap(lambda a: lfc_lib.lfc(a, y, num_classes=4)))(jnp.stack([x, 3.0 * x + 1.0]))
  np.testing.assert_allclose(got, [want, want], rtol=1e-10)  # scale and shift invariant
  perm = np.array([3, 1, 0, 2])
  np.testing.assert_allclose(lfc_lib.lfc(x, perm[y]), want, rtol=1e-10)
  with pytest.raises(ValueError, match="NaN"):
    lfc_lib.lfc(np.full((5, 2), np.nan), np.arange(5) % 2)
