"""H-score and regularized H-score: float64 oracle, tllib / sklearn numbers, jit/vmap, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import cases_peers as cases
import reference
import reference_hscore
from transrate_jax._src.hscore import hscore
from transrate_jax._src.hscore import regularized_hscore
from transrate_jax._src.hscore import regularized_hscore_details

_DATA = reference.recorded("peers_a_reference.json")
_NAMES = ["balanced", "imbalanced", "n_lt_d", "many_classes", "two_classes", "dead_units"]


@pytest.mark.parametrize("name", _NAMES)
def test_hscore_float64_oracle_and_tllib(name):
  f, y = cases.CASES[name]()
  got = hscore(f, y)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), reference_hscore.hscore(f, y), rtol=1e-10)
  np.testing.assert_allclose(float(got), _DATA["classification"][name]["tllib_h_score"], rtol=1e-10)


@pytest.mark.parametrize("name", _NAMES)
def test_regularized_float64_oracle_tllib_sklearn(name):
  f, y = cases.CASES[name]()
  n = len(y)
  got, a = regularized_hscore_details(f, y)
  pub = _DATA["classification"][name]
  np.testing.assert_allclose(float(a), pub["sklearn_ledoit_wolf_shrinkage"], rtol=1e-10)
  np.testing.assert_allclose(float(a), reference_hscore.ledoit_wolf_shrinkage(f), rtol=1e-10)
  np.testing.assert_allclose(float(got), reference_hscore.regularized_hscore(f, y), rtol=1e-10)
  # tllib mixes sklearn's 1/n covariance with np.cov's 1/(n-1): its value is ours * n/(n-1).
  np.testing.assert_allclose(float(got) * n / (n - 1), pub["tllib_regularized_h_score"],
                             rtol=1e-10)


@pytest.mark.parametrize("name", ["balanced", "n_lt_d", "many_classes"])
def test_float32(name):
  f, y = cases.CASES[name]()
  f32 = f.astype(np.float32)
  h = hscore(f32, y)
  r = regularized_hscore(f32, y)
  assert h.dtype == jnp.float32 and r.dtype == jnp.float32
  np.testing.assert_allclose(float(h), reference_hscore.hscore(f, y), rtol=2e-4)
  np.testing.assert_allclose(float(r), reference_hscore.regularized_hscore(f, y), rtol=2e-4)


def test_n_le_d_gives_c_minus_1():
  f, y = cases.CASES["n_lt_d"]()
  np.testing.assert_allclose(float(hscore(f, y)), 2.0, rtol=1e-10)


def test_jit_vmap_invariances_and_edges():
  f, y = cases.CASES["imbalanced"]()
  h, r = float(hscore(f, y)), float(regularized_hscore(f, y))
  jh = jax.jit(lambda a, b: hscore(a, b, num_classes=5))
  jr = jax.jit(lambda a, b: regularized_hscore(a, b, num_classes=5))
  np.testing.assert_allclose(float(jh(f, y)), h, rtol=1e-11)
  np.testing.assert_allclose(float(jr(f, y)), r, rtol=1e-11)
  stack = np.stack([f, 3.0 * f + 1.0, f[::-1]])
  np.testing.assert_allclose(np.asarray(jax.vmap(lambda a: hscore(a, y, num_classes=5))(stack)),
                             [h, h, float(hscore(f[::-1], y))], rtol=1e-10)
  np.testing.assert_allclose(
      np.asarray(jax.vmap(lambda a: regularized_hscore(a, y, num_classes=5))(stack)),
      [r, r, float(regularized_hscore(f[::-1], y))], rtol=1e-10)
  # Label renaming and sample order.
  perm = np.random.default_rng(0).permutation(len(y))
  np.testing.assert_allclose(float(hscore(f[perm], (y[perm] + 2) % 5)), h, rtol=1e-10)
  np.testing.assert_allclose(float(regularized_hscore(f[perm], (y[perm] + 2) % 5)), r, rtol=1e-10)
  # H-score is invariant to invertible linear maps; regularized only to rotations.
  rng = np.random.default_rng(1)
  np.testing.assert_allclose(float(hscore(f @ rng.normal(size=(20, 20)), y)), h, rtol=1e-8)
  q, _ = np.linalg.qr(rng.normal(size=(20, 20)))
  np.testing.assert_allclose(float(regularized_hscore(f @ q, y)), r, rtol=1e-9)
  # Empty class (num_classes larger than present) and a one-sample class.
  np.testing.assert_allclose(float(hscore(f, y, num_classes=7)), h, rtol=1e-12)
  y1 = y.copy()
  y1[0] = 5
  np.testing.assert_allclose(float(hscore(f, y1)), reference_hscore.hscore(f, y1), rtol=1e-10)
  np.testing.assert_allclose(float(regularized_hscore(f, y1)),
                             reference_hscore.regularized_hscore(f, y1), rtol=1e-10)
  # Constant features: defined value 0; d = 1: shrinkage 0.
  assert float(hscore(np.ones((10, 3)), np.arange(10) % 2)) == 0.0
  f1 = f[:, :1]
  s1, a1 = regularized_hscore_details(f1, y)
  assert float(a1) == 0.0
  np.testing.assert_allclose(float(s1), float(hscore(f1, y)), rtol=1e-12)


def test_errors():
  f, y = cases.CASES["balanced"]()
  for fn in (hscore, regularized_hscore):
    with pytest.raises(ValueError, match="2-D"):
      fn(f[0], y)
    with pytest.raises(ValueError, match="entries"):
      fn(f, y[:-1])
    with pytest.raises(ValueError, match="NaN"):
      fn(np.where(f > 3, np.inf, f), y)
    with pytest.raises(ValueError, match="integer"):
      fn(f, y.astype(float))
    with pytest.raises(ValueError, match="num_classes"):
      jax.jit(lambda a, b: fn(a, b))(f, y)


def test_float32_keeps_every_resolved_direction():
  """The pseudo-inverse drops round-off only (100 ulps of the largest eigenvalue).

  ``jnp.linalg.pinv``'s rule, ``10 K eps max``, dropped directions that float32 resolves: a
  spectrum falling to 1.6e-5 of its largest (K = 256) lost 8.5% of the H-score, and a few
  strong directions over a flat tail (K = 512, Ledoit-Wolf shrinkage 1.7e-3) 30% of the
  regularized H-score, against the float64 oracle on the same float32 values.
  """
  r = np.random.default_rng(0)
  y = r.integers(0, 10, 2000)
  f = ((r.normal(size=(2000, 256)) + 0.3 * r.normal(size=(10, 256))[y])
       * np.logspace(0, -2.2, 256)).astype(np.float32)
  np.testing.assert_allclose(float(hscore(f, y)), reference_hscore.hscore(f.astype(np.float64), y),
                             rtol=1e-4)
  r = np.random.default_rng(0)
  y = r.integers(0, 10, 3000)
  scale = np.logspace(0, -1, 512)
  scale[:4] *= 40
  f = ((r.normal(size=(3000, 512)) + 0.3 * r.normal(size=(10, 512))[y]) * scale).astype(np.float32)
  np.testing.assert_allclose(float(regularized_hscore(f, y)),
                             reference_hscore.regularized_hscore(f.astype(np.float64), y), rtol=1e-4)
