"""Eager TransRate on the CPU with the products through NumPy's BLAS: same numbers, never traced."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import reference
import transrate_jax as tj
from transrate_jax._src import numerics as tj_numerics
from transrate_jax._src.transrate import kernel

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
  """Counts the calls of the host path (on by default for eager CPU calls)."""
  calls = []
  real = kernel.host_moments

  def counting(*args, **kwargs):
    calls.append(np.shape(args[0]))
    return real(*args, **kwargs)

  monkeypatch.delenv(kernel.HOST_PRODUCTS_ENV, raising=False)
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
  assert len(host) == 1
  want = reference.transrate(f.astype(np.float64), y,
                             weighting="uniform" if preset == "tllib" else "prior")
  tol = 1e-10 if dtype == np.float64 else 2e-5
  np.testing.assert_allclose(got, want, rtol=tol)
  np.testing.assert_allclose(got, compiled, rtol=tol)


@pytest.mark.parametrize("n,d,c", SHAPES)
def test_host_moments_are_the_oracle_products(n, d, c):
  """Each moment on its full-rank side, classes contiguous after the stable sort by label."""
  f, y = _case(n, d, c)
  m = kernel.host_moments(f, y, num_classes=c)
  z = f - f.mean(axis=0)
  order = np.argsort(y, kind="stable")
  zs = z[order]
  upper = np.triu  # BLAS syrk writes the upper triangle; the program mirrors it
  np.testing.assert_allclose(upper(m.total), upper(zs @ zs.T if n <= d else z.T @ z), rtol=1e-10,
                             atol=1e-8)
  assert m.gram_total == (n <= d)
  counts = np.bincount(y, minlength=c)
  np.testing.assert_array_equal(m.counts, counts)
  assert list(m.class_ids) == [k for k in range(c) if 0 < counts[k] < n]
  for mat, k in zip(m.classes, m.class_ids):
    zc = z[y == k]
    want = zc @ zc.T if counts[k] <= d else zc.T @ zc
    size = want.shape[0]
    np.testing.assert_allclose(upper(mat[:size, :size]), upper(want), rtol=1e-10, atol=1e-8)
    assert not mat[size:].any() and not mat[:, size:].any()  # zero padding


def test_factorisation_reads_the_upper_triangle_only():
  """BLAS syrk writes one triangle: junk in the strict lower one must not change a log-det."""
  rng = np.random.default_rng(1)
  for dtype in (np.float32, np.float64):
    x = rng.normal(size=(3, 40, 30)).astype(dtype)
    a = x @ np.swapaxes(x, -1, -2)
    junk = np.where(np.tril(np.ones((40, 40), bool), -1), rng.normal(size=(3, 40, 40)), a)
    want = [np.linalg.slogdet(np.eye(40) + 0.1 * m.astype(np.float64))[1] for m in a]
    for m in (a, junk.astype(dtype)):
      got = jax.jit(tj_numerics.logdet_identity_plus)(m, np.full(3, 0.1, dtype))
      np.testing.assert_allclose(got, want, rtol=1e-5 if dtype == np.float32 else 1e-12)



def test_padded_width_and_input_kinds(host):
  """Moments padded to a sweep's bucket width give the same score; JAX, half and list inputs."""
  f, y = _case(300, 40, 3, dtype=np.float32)
  want = reference.transrate(f.astype(np.float64), y)
  padded = kernel.host_moments(f, y, num_classes=3, width=64)
  assert padded.total.shape == (64, 64) and padded.classes.shape == (3, 64, 64)
  got = kernel.transrate_host_products(f, y, 1e-4, config=kernel.resolve_config(None, None),
                                       num_classes=3, width=64)
  np.testing.assert_allclose(got, want, rtol=2e-5)
  np.testing.assert_allclose(tj.transrate(jnp.asarray(f), y), want, rtol=2e-5)
  half = f.astype(np.float16)
  got = tj.transrate(half, y)
  assert got.dtype == np.float32
  np.testing.assert_allclose(got, reference.transrate(half.astype(np.float64), y), rtol=2e-5)
  np.testing.assert_allclose(tj.transrate(f.astype(np.float64).tolist(), list(y)),
                             reference.transrate(f.astype(np.float64), y), rtol=2e-5)
  assert len(host) == 5  # the direct call, JAX, half precision, lists


def test_full_class_and_empty_labels(host):
  f, _ = _case(50, 10, 2)
  y = np.zeros(50, int)  # one class holds every row: TrR = R(Z) - R(Z) = 0
  np.testing.assert_allclose(tj.transrate(f, y, num_classes=3), 0.0, atol=1e-12)
  y = np.where(np.arange(50) < 20, 0, 2)  # label 1 absent
  np.testing.assert_allclose(tj.transrate(f, y), reference.transrate(f, y), rtol=1e-10)
  np.testing.assert_allclose(tj.transrate(f, y, weighting="uniform"),
                             reference.transrate(f, y, weighting="uniform", num_classes=3),
                             rtol=1e-10)
  assert len(host) == 3


def test_sweep_takes_the_host_path(host, monkeypatch):
  """An eager sweep on the CPU: host products, the widths' buckets shared, the oracle's numbers."""
  rng = np.random.default_rng(3)
  y = rng.integers(0, 5, 400)
  layers = {f"w{d}": (rng.normal(size=(400, d)) + np.eye(5, d)[y]).astype(np.float32)
            for d in (20, 24, 30, 100, 600)}
  before = kernel.compiled_programs()
  got = tj.transrate_many(layers, y, progress=False, min_width=32)
  # Buckets 32 (20, 24, 30), 128 (100) and the Gram-side total of width 600 (n = 400 <= d).
  assert kernel.compiled_programs() - before <= 3
  assert len(host) == len(layers)
  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "0")
  compiled = tj.transrate_many(layers, y, progress=False, min_width=32)
  assert len(host) == len(layers)
  for k, f in layers.items():
    want = reference.transrate(f.astype(np.float64), y)
    np.testing.assert_allclose(got[k], want, rtol=2e-5)
    np.testing.assert_allclose(got[k], compiled[k], rtol=2e-5)


def test_never_under_a_trace(monkeypatch):
  monkeypatch.delenv(kernel.HOST_PRODUCTS_ENV, raising=False)

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
  # A vector eps (eigenvalues) and the official preset (normalisation, rank rule) stay compiled.
  tj.transrate(f, y, eps=np.array([1e-4, 1e-2]))
  tj.transrate(f, y, preset="official")
  tj.transrate_many([f, f[:, :5]], y, eps=np.array([1e-4, 1e-2]), progress=False)


def test_which_calls_take_the_host_path(monkeypatch):
  monkeypatch.delenv(kernel.HOST_PRODUCTS_ENV, raising=False)
  cfg = kernel.resolve_config(None, None)
  f, y = np.zeros((100, 8), np.float32), np.arange(100) % 2

  def uses(features=f, *, eps_vector=False, config=cfg):
    return kernel.use_host_products(features, y, eps_vector, config)

  assert uses() and uses(f.astype(np.float16)) and uses(jnp.asarray(f))
  assert uses(config=kernel.resolve_config(None, "tllib"))
  assert not uses(eps_vector=True)  # a vector eps: eigenvalues
  assert not uses(config=kernel.resolve_config(None, "official"))
  assert not uses(f.astype(np.int32))
  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "0")
  assert not uses()


@pytest.mark.parametrize("gram", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_product_eigh_is_the_eigendecomposition_of_the_product(gram, dtype):
  """``numerics.product_eigh`` (host syrk + syevd on the CPU, through a callback) against a
  float64 NumPy eigendecomposition of the same product, eagerly, under jit and under vmap."""
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    pytest.skip("float64 needs jax_enable_x64")
  rng = np.random.default_rng(3)
  z = (rng.standard_normal((40, 24)) * np.linspace(0.5, 3.0, 24)).astype(dtype)
  z = z.T.copy() if gram else z  # the Gram side of a wide matrix
  z64 = z.astype(np.float64)
  a = z64 @ z64.T if gram else z64.T @ z64
  want = np.linalg.eigvalsh(a)
  tol = 2e-5 if dtype == np.float32 else 1e-11
  fn = functools.partial(tj_numerics.product_eigh, gram=gram)
  for w, v in (fn(jnp.asarray(z)), jax.jit(fn)(jnp.asarray(z)),
               [x[1] for x in jax.vmap(fn)(jnp.stack([z * 2, z]))]):
    w, v = np.asarray(w, np.float64), np.asarray(v, np.float64)
    assert w.dtype == np.float64 and np.asarray(fn(jnp.asarray(z))[0]).dtype == dtype
    np.testing.assert_allclose(w, want, rtol=0, atol=tol * want[-1])
    np.testing.assert_allclose(v.T @ v, np.eye(len(w)), atol=50 * tol)
    np.testing.assert_allclose(v.T @ a @ v, np.diag(want), atol=5 * tol * want[-1])
  for top in (3, 10):  # the leading pairs: syevr by index (3 <= 24 / 4), a slice of syevd (10)
    w, v = jax.jit(functools.partial(fn, top=top))(jnp.asarray(z))
    assert w.shape == (top,) and v.shape == (len(want), top)
    w, v = np.asarray(w, np.float64), np.asarray(v, np.float64)
    np.testing.assert_allclose(w, want[-top:], rtol=0, atol=tol * want[-1])
    np.testing.assert_allclose(v.T @ a @ v, np.diag(want[-top:]), atol=5 * tol * want[-1])
  jaxpr = str(jax.make_jaxpr(fn)(jnp.asarray(z)))
  assert ("pure_callback" in jaxpr) == (jax.default_backend() == "cpu"), jaxpr


@pytest.mark.parametrize("gram", [False, True])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_product_spectrum_projects_on_the_eigenvectors_of_the_product(gram, dtype):
  """``numerics.product_spectrum`` (host syrk, sytrd, ormqr on ``b``, stevd on the CPU) against a
  float64 NumPy eigendecomposition: eigenvalues, ``|v_i^T b|`` for the simple eigenvalues, and
  for the null space of a rank-deficient product (where the eigenvectors are arbitrary) the
  norm of ``b``'s part in it; eagerly, under jit and under vmap."""
  if dtype == np.float64 and not jax.config.jax_enable_x64:
    pytest.skip("float64 needs jax_enable_x64")
  rng = np.random.default_rng(5)
  tol = 2e-5 if dtype == np.float32 else 1e-11
  fn = functools.partial(tj_numerics.product_spectrum, gram=gram)
  # Full rank (24 x 24), then rank 24 in a 40 x 40 product (a null space of dimension 16).
  for shape in ((40, 24), (24, 40)) if not gram else ((24, 40), (40, 24)):
    z = (rng.standard_normal(shape) * np.linspace(0.5, 3.0, shape[1])).astype(dtype)
    z64 = z.astype(np.float64)
    a = z64 @ z64.T if gram else z64.T @ z64
    b = rng.standard_normal((a.shape[0], 3)).astype(dtype)
    want_w, vecs = np.linalg.eigh(a)
    want_p = vecs.T @ b.astype(np.float64)
    null = want_w <= 1e-9 * want_w[-1]
    assert null.sum() == (16 if a.shape[0] == 40 else 0)
    for w, p in (fn(jnp.asarray(z), jnp.asarray(b)), jax.jit(fn)(jnp.asarray(z), jnp.asarray(b)),
                 [x[1] for x in jax.vmap(fn)(jnp.stack([z * 2, z]), jnp.stack([b, b]))]):
      assert w.dtype == dtype and p.dtype == dtype and p.shape == b.shape
      w, p = np.asarray(w, np.float64), np.asarray(p, np.float64)
      np.testing.assert_allclose(w, want_w, rtol=0, atol=tol * want_w[-1])
      np.testing.assert_allclose(np.abs(p[~null]), np.abs(want_p[~null]), rtol=0, atol=50 * tol)
      np.testing.assert_allclose(np.sum(p[null] ** 2, axis=0), np.sum(want_p[null] ** 2, axis=0),
                                 rtol=0, atol=50 * tol)
  w, p = fn(jnp.ones((3, 1), dtype), jnp.full((3 if gram else 1, 2), 2.0, dtype))  # one row / column
  np.testing.assert_allclose(np.asarray(w)[-1], 3.0, rtol=1e-6)
  with pytest.raises(ValueError, match="rows"):
    fn(jnp.asarray(z), jnp.ones((7, 2), dtype))
  jaxpr = str(jax.make_jaxpr(fn)(jnp.asarray(z), jnp.asarray(b)))
  assert ("pure_callback" in jaxpr) == (jax.default_backend() == "cpu"), jaxpr


def test_product_spectrum_redoes_an_unresolved_float32_spectrum_in_float64(monkeypatch):
  """A float32 eigensolver resolves eigenvalues to ~eps * max only; where the float32 product
  holds smaller ones (features of graded scale, as a stem's channels are: each entry of the
  product keeps its relative accuracy), the host redoes the spectrum in float64 from that same
  product: the small eigenvalues and their coordinates come out as float64 gives them, which
  float32 alone misses by orders of magnitude. A well-resolved spectrum (and exact zeros from
  dead units) stays in float32."""
  if jax.default_backend() != "cpu":
    pytest.skip("the host path runs on the CPU backend")
  calls = []
  real = tj_numerics.host_spectrum

  def counting(a, b):
    calls.append(a.dtype)
    return real(a, b)

  monkeypatch.setattr(tj_numerics, "host_spectrum", counting)
  rng = np.random.default_rng(7)
  y = rng.integers(0, 10, 1600)
  # Class structure at channel scales 1 .. 1e-4 (a stem's): eigenvalues down to ~1e-8 of the top.
  f = (rng.standard_normal((1600, 32)) + 0.5 * rng.standard_normal((10, 32))[y]) * np.logspace(0, -4, 32)
  z = (f - f.mean(axis=0)).astype(np.float32)
  b = rng.standard_normal((32, 2)).astype(np.float32)
  a64 = z.astype(np.float64).T @ z.astype(np.float64)  # the float32 product, to float64 accuracy
  want_w, vecs = np.linalg.eigh(a64)
  want_p = vecs.T @ b.astype(np.float64)
  assert want_w[0] < 1e-7 * want_w[-1]
  w32, p32 = real(tj_numerics.host_product(z, gram=False, lower=True), b)  # float32 alone
  assert np.max(np.abs(w32[:3] - want_w[:3]) / want_w[:3]) > 1e-3
  assert np.max(np.abs(np.abs(p32) - np.abs(want_p))) > 1e-2
  for w, p in (tj_numerics.product_spectrum(jnp.asarray(z), jnp.asarray(b)),
               jax.jit(tj_numerics.product_spectrum)(jnp.asarray(z), jnp.asarray(b))):
    assert w.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(w), want_w, rtol=1e-5)
    np.testing.assert_allclose(np.abs(np.asarray(p)), np.abs(want_p), rtol=0, atol=1e-5)
  assert calls == [np.float32, np.float64] * 2
  calls.clear()
  base = rng.standard_normal((2000, 16))
  dead = np.c_[base, np.zeros(2000)].astype(np.float32)  # an exactly zero column: exactly 0
  w, _ = tj_numerics.product_spectrum(jnp.asarray(dead), jnp.asarray(b[:17]))
  assert float(w[0]) == 0.0 and calls == [np.float32]
