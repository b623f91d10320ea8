"""Eager TransRate on the CPU with the products through NumPy's BLAS: same numbers, never traced."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
import transrate_jax as tj
from transrate_jax._src import transrate_kernel as kernel

# (n, d, C): covariance-side total summed from the classes; a Gram-side total (n <= d); a mix of
# sides; many small classes; a class holding every row but one absent label.
SHAPES = [(300, 40, 3), (120, 300, 4), (400, 64, 40), (60, 80, 25)]


def _case(n, d, c, seed=0, dtype=np.float64):
  rng = np.random.default_rng(seed)
  y = rng.permutation(np.arange(n) % c)
  f = rng.normal(size=(n, d)) + 3.0 * np.eye(c, d)[y] + 5.0
  return f.astype(dtype), y


@pytest.fixture
def host(monkeypatch):
  """Forces the host path for any size and counts its calls."""
  calls = []
  real = kernel.host_moments

  def counting(*args, **kwargs):
    calls.append(args[0].shape)
    return real(*args, **kwargs)

  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "1")
  monkeypatch.setattr(kernel, "host_moments", counting)
  return calls


@pytest.mark.parametrize("shape,dtype,preset", [(s, t, None) for s in SHAPES
                                                for t in (np.float64, np.float32)]
                         + [(SHAPES[2], np.float32, "tllib")])
def test_host_products_equal_compiled_and_oracle(host, monkeypatch, shape, dtype, preset):
  f, y = _case(*shape, dtype=dtype)
  got = tj.transrate(f, y, preset=preset)
  assert host and got.dtype == dtype
  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "0")
  compiled = tj.transrate(f, y, preset=preset)
  want = reference.transrate(f.astype(np.float64), y,
                             weighting="uniform" if preset == "tllib" else "prior")
  tol = 1e-10 if dtype == np.float64 else 2e-5
  np.testing.assert_allclose(got, want, rtol=tol)
  np.testing.assert_allclose(got, compiled, rtol=tol)


def test_full_class_and_empty_labels(host):
  f, _ = _case(50, 10, 2)
  y = np.zeros(50, int)  # one class holds every row: TrR = R(Z) - R(Z) = 0
  np.testing.assert_allclose(tj.transrate(f, y, num_classes=3), 0.0, atol=1e-12)
  y = np.where(np.arange(50) < 20, 0, 2)  # label 1 absent
  np.testing.assert_allclose(tj.transrate(f, y), reference.transrate(f, y), rtol=1e-10)
  assert host


def test_never_under_a_trace(monkeypatch):
  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "1")

  def refuse(*args, **kwargs):
    raise AssertionError("host products under a trace")

  monkeypatch.setattr(kernel, "host_moments", refuse)
  f, y = _case(80, 12, 3)
  eager = reference.transrate(f, y)
  np.testing.assert_allclose(jax.jit(lambda a: tj.transrate(a, y, num_classes=3))(f), eager,
                             rtol=1e-10)
  stack = jnp.stack([f, f[:, ::-1]])
  np.testing.assert_allclose(jax.vmap(lambda a: tj.transrate(a, y, num_classes=3))(stack),
                             [eager, eager], rtol=1e-10)
  g = jax.grad(lambda a: tj.transrate(a, y, num_classes=3))(f)
  assert np.all(np.isfinite(g))
  # A vector eps (eigenvalues) and the official preset (rank rule) keep the compiled path too.
  tj.transrate(f, y, eps=np.array([1e-4, 1e-2]))
  tj.transrate(f, y, preset="official")


def test_which_calls_take_the_host_path(monkeypatch):
  monkeypatch.delenv(kernel.HOST_PRODUCTS_ENV, raising=False)
  cfg = kernel.resolve_config(None, None)

  def uses(n, d, c, *, dtype=np.float32, eps_vector=False, config=cfg):
    f = np.zeros((n, d), dtype)
    y = np.arange(n) % c
    plan = kernel.make_block_plan(y, c, d)[0]
    return kernel.use_host_products(f, y, plan, eps_vector, config)

  assert not uses(100, 8, 2)  # small: one compiled program
  assert not uses(20000, 400, 2)  # large, but the total is the sum of the class covariances
  assert uses(12000, 512, 100)  # a large total on the covariance side, classes on the Gram side
  assert uses(1000, 3000, 10)  # a large total on the Gram side
  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "1")
  assert uses(100, 8, 2) and uses(20000, 400, 2)
  assert not uses(100, 8, 2, eps_vector=True)  # a vector eps: eigenvalues
  assert not uses(100, 8, 2, dtype=np.float16)
  assert not uses(100, 8, 2, config=kernel.resolve_config(None, "official"))
  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "0")
  assert not uses(12000, 512, 100)
