"""GBC (and the exact PCA it shares with N-LEEP and PARC) against float64 oracles and public code."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_peers as cases
import reference
import reference_gbc
import reference_pca
from transrate_jax._src import gbc as gbc_lib
from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics

REF = reference.recorded("peers_b_reference.json")
CASES = sorted(cases.FEATURE_CASES)

@pytest.mark.parametrize("shape", [(50, 8), (12, 30), (300, 40)])
def test_pca_matches_sklearn(shape):
  # (300, 40) with k = 5 <= d / 4 takes the CPU's host path (syrk + partial syevr).
  x = np.random.default_rng(0).normal(size=shape) @ np.diag(np.linspace(1, 3, shape[1]))
  k = 5
  got = jax.jit(peer_numerics.pca_project, static_argnums=1)(x, k)
  np.testing.assert_allclose(got, reference_pca.pca_full(x, k), atol=1e-10)


def test_pca_host_axes_equal_the_full_eigh(monkeypatch):
  """The CPU's leading-axes path (a host callback) against the full eigh: float64 and float32,
  through jit and vmap, with a large common offset."""
  rng = np.random.default_rng(1)
  x = rng.normal(size=(2, 400, 48)) @ np.diag(np.linspace(1, 4, 48)) + 1e3
  tops = []
  real = numerics._product_eigh_host  # pylint: disable=protected-access

  def counting(*args, **kwargs):
    tops.append(kwargs["top"])
    return real(*args, **kwargs)

  monkeypatch.setattr(numerics, "_product_eigh_host", counting)
  project = jax.jit(peer_numerics.pca_project, static_argnums=(1,))
  for dtype, tol in ((np.float64, 1e-9), (np.float32, 2e-3)):
    xs = x.astype(dtype)
    full = [np.asarray(xs[i] - xs[i].mean(0)) @ np.asarray(peer_numerics.pca_eigh(xs[i])[2][:, :8])
            for i in range(2)]
    np.testing.assert_allclose(project(xs[0], 8), full[0], atol=tol * np.abs(full[0]).max())
    got = jax.vmap(lambda a: peer_numerics.pca_project(a, 8))(xs)
    np.testing.assert_allclose(got, np.stack(full), atol=tol * np.abs(full[0]).max())
  if jax.default_backend() == "cpu":  # the host's partial path (syevr for 8 <= 48 / 4) ran
    assert 8 in tops and 8 <= numerics._PARTIAL_EIGH_MAX_FRACTION * 48  # pylint: disable=protected-access

@pytest.mark.parametrize("name", CASES)
@pytest.mark.parametrize("gaussian", ["spherical", "diagonal"])
def test_gbc_matches_stable_transfer_and_oracle(name, gaussian):
  x, y = cases.feature_case(name)
  want = REF["gbc_stable_transfer"][f"{name}/{gaussian}"]
  # The reference casts PCA outputs to float32 when it reduces (d > 64).
  rtol = 1e-10 if REF["gbc_stable_transfer_input_dtype"][f"{name}/{gaussian}"] == "float64" else 2e-5
  oracle = reference_gbc.gbc(x, y, gaussian=gaussian)
  np.testing.assert_allclose(oracle, want, rtol=rtol)
  np.testing.assert_allclose(gbc_lib.gbc(x, y, gaussian=gaussian), oracle, rtol=1e-9)
  if name == "small":  # the low-noise cases are too ill-conditioned for a float32 PCA
    got32 = gbc_lib.gbc(x.astype(np.float32), y, gaussian=gaussian)
    assert got32.dtype == jnp.float32
    np.testing.assert_allclose(got32, oracle, rtol=1e-4)

def test_gbc_jit_vmap_empty_class_and_relabel():
  x, y = cases.feature_case("small")
  f = jax.jit(jax.vmap(lambda a: gbc_lib.gbc(a, y, num_classes=4, pca_dim=6)))
  got = f(jnp.stack([x, x[::-1]]))
  want0 = reference_gbc.gbc(x, y, pca_dim=6)
  np.testing.assert_allclose(got[0], want0, rtol=1e-9)
  # An empty class (label 4 unused, 5 classes declared) contributes nothing.
  y_gap = np.where(y == 3, 4, y)
  np.testing.assert_allclose(gbc_lib.gbc(x, y_gap, num_classes=6), gbc_lib.gbc(x, y), rtol=1e-12)
  with pytest.raises(ValueError, match="gaussian"):
    gbc_lib.gbc(x, y, gaussian="full")
  with pytest.raises(ValueError, match="pca_dim"):
    gbc_lib.gbc(x, y, pca_dim=0)
