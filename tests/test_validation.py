"""Shared input validation: eps in the compute dtype, complex input, huge labels, type errors."""

import os
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transrate_jax as tj
from transrate_jax._src import validation

_RNG = np.random.default_rng(0)
_F = _RNG.normal(size=(10, 3))
_Y = np.arange(10) % 2


@pytest.mark.parametrize("eps", [1e-50, 1e-40, 1e39])
def test_eps_outside_float32_range_raises(eps):
  # Representable in float64, 0 (or subnormal) or inf in float32, where the computation runs.
  with pytest.raises(ValueError, match="normal range of float32"):
    validation.check_eps(eps, dtype=np.float32)


def test_eps_underflow_default_float32_session():
  """Without jax_enable_x64 (the user's default) the default compute dtype is float32."""
  code = ("import numpy as np, transrate_jax as tj\n"
          "f = np.random.default_rng(0).normal(size=(10, 3)).astype(np.float32)\n"
          "try:\n  tj.transrate(f, np.arange(10) % 2, eps=1e-50)\n"
          "except ValueError as e:\n  print('ValueError', e)\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, "JAX_ENABLE_X64": "0"}, check=True).stdout
  assert out.startswith("ValueError") and "float32" in out


def test_eps_accepted_in_range_and_old_signature():
  assert validation.check_eps(1e-30, dtype=np.float32) == (1e-30, False)
  assert validation.check_eps(1e-50, dtype=np.float64) == (1e-50, False)  # fine in float64
  eps, vector = validation.check_eps(np.array([1e-3, 1e-2]))  # the old call, no dtype
  assert vector and eps.shape == (2,)
  # Half precision computes in float32, so it is checked there.
  with pytest.raises(ValueError, match="float32"):
    validation.check_eps(1e-45, dtype=np.float16)


@pytest.mark.parametrize("eps", ["1e-3", b"1", True, 1e-3 + 0j, np.array([[1e-3]]), np.array([]),
                                 -1.0, 0.0, float("nan"), float("inf")])
def test_eps_bad_types_and_values(eps):
  with pytest.raises(ValueError, match="eps"):
    validation.check_eps(eps)


@pytest.mark.parametrize("fn", [tj.transrate, tj.logme, tj.hscore, tj.regularized_hscore, tj.lfc,
                                tj.gbc, tj.sfda, tj.parc])
def test_complex_features_rejected(fn):
  with pytest.raises(ValueError, match="complex"):
    fn(_F + 1j * _F, _Y)


def test_complex_elsewhere_rejected():
  with pytest.raises(ValueError, match="complex"):
    tj.logme(_F, _F[:, 0] + 1j, regression=True)
  with pytest.raises(ValueError, match="complex"):
    tj.pearson(np.arange(4.0) + 1j, np.arange(4.0))
  with pytest.raises(ValueError, match="integer"):
    tj.hscore(_F, _Y + 0j)


@pytest.mark.parametrize("fn", [tj.gbc, tj.lfc, tj.hscore, tj.logme, tj.sfda])
@pytest.mark.parametrize("big", [10**6, 10**9])
def test_huge_labels_raise_fast_without_allocating(fn, big):
  y = _Y.copy()
  y[3] = big
  start = time.perf_counter()
  with pytest.raises(ValueError, match=f"largest of the (labels|targets) is {big}.*implies {big + 1} classes"):
    fn(_F, y)
  assert time.perf_counter() - start < 1.0


def test_huge_labels_nce_and_explicit_num_classes():
  z = np.arange(10) % 3
  y = _Y.copy()
  y[0] = 10**9
  start = time.perf_counter()
  with pytest.raises(ValueError, match="1000000000"):
    tj.nce(z, y)
  with pytest.raises(ValueError, match="1000000000"):
    tj.nce(y, z)  # source labels
  with pytest.raises(ValueError, match="exceeds the limit"):
    tj.gbc(_F, _Y, num_classes=10**9)
  assert time.perf_counter() - start < 1.0
  # Up to the limit a sparse label set is fine and equals the compacted one.
  sparse = np.where(_Y == 1, 60000, 0)
  np.testing.assert_allclose(float(tj.lfc(_F, sparse)), float(tj.lfc(_F, _Y)), rtol=1e-12)
  np.testing.assert_allclose(float(tj.nce(sparse, z)), float(tj.nce(_Y, z)), rtol=1e-12)


@pytest.mark.parametrize("bad", [2.0, "3", True, 0, -1, 2.5])
def test_num_classes_type_errors(bad):
  with pytest.raises(ValueError, match="num_classes"):
    tj.hscore(_F, _Y, num_classes=bad)
  with pytest.raises(ValueError, match="num_classes"):
    tj.transrate(_F, _Y, num_classes=bad)


@pytest.mark.parametrize("k", [1.0, "1", True, 0, 5])
def test_top_k_type_errors(k):
  with pytest.raises(ValueError, match="k must"):
    tj.top_k_hit(np.arange(4.0), np.arange(4.0), k=k)


def test_pearson_small_spread_on_offset():
  x = 1 + 1e-10 * np.arange(5)
  for dtype in (np.float64, np.float32):
    with jax.enable_x64(dtype == np.float64):
      r = tj.pearson(x, np.arange(5))
      assert np.isfinite(float(r))
      np.testing.assert_allclose(float(r), 1.0, rtol=1e-6)
      np.testing.assert_allclose(float(tj.kendall_tau(x, np.arange(5))), 1.0, rtol=1e-6)
  # Shift-centred inside jit too (JAX input already in the compute dtype).
  xj = jnp.asarray(1e4 + np.array([0.0, 1, 2, 4]), jnp.float32)
  np.testing.assert_allclose(float(jax.jit(tj.pearson)(xj, jnp.arange(4.0))),
                             np.corrcoef(np.asarray(xj, np.float64), np.arange(4.0))[0, 1],
                             rtol=1e-6)
  with pytest.raises(ValueError, match="constant"):
    tj.pearson(np.ones(5), np.arange(5))


def test_logme_regression_zero_target_is_unbounded():
  with pytest.raises(ValueError, match="unbounded"):
    tj.logme(_RNG.normal(size=(20, 3)), np.zeros(20), regression=True)


@pytest.mark.parametrize("path", ["transrate", "sharded", "from_batches", "loss", "many",
                                  "stats"])
def test_eps_checked_in_the_compute_dtype_on_every_transrate_path(path):
  """x64 is on in the tests: float32 features must still refuse an eps that is 0 in float32."""
  r = np.random.default_rng(0)
  f = r.normal(size=(40, 4)).astype(np.float32)
  y = r.integers(0, 3, 40)
  calls = {
      "transrate": lambda e: tj.transrate(f, y, eps=e),
      "sharded": lambda e: tj.transrate_sharded(f, y, eps=e),
      "from_batches": lambda e: tj.transrate_from_batches([(f, y)], eps=e, progress=False),
      "loss": lambda e: tj.transrate_loss(f, y, eps=e, num_classes=3),
      "many": lambda e: tj.transrate_many([f], y, eps=e, progress=False),
      "stats": lambda e: tj.TransRateStats.init(4, num_classes=3).update(f, y).finalize(eps=e),
  }
  with pytest.raises(ValueError, match="float32"):
    calls[path](1e-50)
  assert np.all(np.isfinite(np.asarray(calls[path](1e-4))))
