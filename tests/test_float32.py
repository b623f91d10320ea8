"""Float32 against float64: every TransRate path on the same float32 values (docs/numerics.md).

Each case draws a shape (n from 20 to 400, d from 2 to 300, so classes with n_c < d and n_c > d
and n < d and n > d all occur), a class count 1..20, a scale 0.3..10, eps 1e-4..1e-2 and a common
offset 0 or 1e4, builds float32 features, and compares every path with the independent float64
NumPy oracle (tests/reference.py) given the SAME float32 values upcast: relative error <= 2e-3,
never NaN. The issue's repros are named tests. The sharded path runs in a subprocess with 8 forced
CPU devices (XLA_FLAGS must precede jax's import): this file is also that subprocess's script.
"""

from __future__ import annotations

import os
import sys

if __name__ == "__main__":  # the sharding worker: 8 CPU devices, set before jax is imported
  os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "")
                             + " --xla_force_host_platform_device_count=8")

import functools  # pylint: disable=wrong-import-position
import json  # pylint: disable=wrong-import-position
import pathlib  # pylint: disable=wrong-import-position
import subprocess  # pylint: disable=wrong-import-position

import jax  # pylint: disable=wrong-import-position
import numpy as np  # pylint: disable=wrong-import-position
import pytest  # pylint: disable=wrong-import-position

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reference  # pylint: disable=wrong-import-position
import transrate_jax as tj  # pylint: disable=wrong-import-position

RTOL = 2e-3
ATOL = 1e-4  # nats: one class gives TrR = 0, where only an absolute bound means anything
SEEDS = list(range(12))


def make_case(seed):
  """One random float32 problem and its keywords; the oracle sees the same float32 values."""
  rng = np.random.default_rng(1000 + seed)
  n = int(rng.integers(20, 401))
  d = int(rng.choice([int(rng.integers(2, 40)), int(rng.integers(40, 301))]))
  c = int(rng.integers(1, 21))
  scale = float(np.exp(rng.uniform(np.log(0.3), np.log(10.0))))
  eps = float(np.exp(rng.uniform(np.log(1e-4), np.log(1e-2))))
  offset = 1e4 if seed % 2 == 0 else 0.0
  weighting = "uniform" if seed % 3 == 2 else "prior"
  y = rng.integers(0, c, n)
  means = 2.0 * rng.normal(size=(c, d))
  f = ((rng.normal(size=(n, d)) + means[y]) * scale + offset).astype(np.float32)
  return f, y, dict(eps=eps, weighting=weighting, num_classes=c)


def oracle(f, y, kw):
  return reference.transrate(f.astype(np.float64), y, eps=kw["eps"], weighting=kw["weighting"],
                             num_classes=kw["num_classes"])


def assert_close(got, expected, what):
  got = float(got)
  assert np.isfinite(got), f"{what}: {got}"
  assert abs(got - expected) <= RTOL * abs(expected) + ATOL, (
      f"{what}: {got} vs float64 {expected} "
      f"(rel {abs(got - expected) / max(abs(expected), 1e-30):.1e})")


def test_cases_cover_both_sides():
  """Guards the draw: n_c < d and n_c > d classes, n < d and n > d, one class, the offset."""
  small = large = n_lt_d = n_gt_d = one_class = offset = 0
  for seed in SEEDS:
    f, y, kw = make_case(seed)
    n, d = f.shape
    counts = np.bincount(y, minlength=kw["num_classes"])
    small += np.any((counts > 0) & (counts < d))
    large += np.any(counts > d)
    n_lt_d += n < d
    n_gt_d += n > d
    one_class += kw["num_classes"] == 1
    offset += abs(float(f.mean())) > 1e3
  assert min(small, large, n_lt_d, n_gt_d, one_class, offset) >= 1


def test_property_in_memory_paths():
  for seed in SEEDS:
    f, y, kw = make_case(seed)
    expected = oracle(f, y, kw)
    c = kw["num_classes"]
    assert_close(tj.transrate(f, y, **kw), expected, f"seed {seed} transrate")
    jitted = jax.jit(functools.partial(tj.transrate, **kw))
    assert_close(jitted(f, y), expected, f"seed {seed} jit(transrate)")
    loss = tj.transrate_loss(f, y, num_classes=c, eps=kw["eps"], weighting=kw["weighting"])
    assert_close(-loss, expected, f"seed {seed} transrate_loss")


def test_property_transrate_many():
  for seed in SEEDS:
    f, y, kw = make_case(seed)
    narrow = f[:, :max(1, f.shape[1] // 3)]
    got = tj.transrate_many({"full": f, "narrow": narrow}, y, progress=False, **kw)
    assert_close(got["full"], oracle(f, y, kw), f"seed {seed} transrate_many full")
    assert_close(got["narrow"], oracle(narrow, y, kw), f"seed {seed} transrate_many narrow")


@pytest.mark.branch_free
def test_property_from_batches():
  for seed in SEEDS:
    f, y, kw = make_case(seed)
    # Chunks of 96 rows (one compiled update per case; the last chunk is ragged and padded).
    chunks = [(f[a:a + 96], y[a:a + 96]) for a in range(0, len(y), 96)]
    got = tj.transrate_from_batches(chunks, progress=False, **kw)
    assert_close(got, oracle(f, y, kw), f"seed {seed} transrate_from_batches")


@pytest.mark.branch_free
def test_transrate_loss_gradient_finite_where_side_matters():
  # n_c < d for every class with n > d (repro 2's shape): the gradient must be finite too.
  rng = np.random.default_rng(1)
  y = rng.integers(0, 17, 300)
  f = ((rng.normal(size=(300, 33)) + 2 * rng.normal(size=(17, 33))[y]) * 10).astype(np.float32)
  for gradient in ("analytic", "autodiff"):
    g = jax.grad(lambda x, gradient=gradient: tj.transrate_loss(
        x, y, num_classes=17, gradient=gradient))(f)
    assert np.all(np.isfinite(np.asarray(g))), gradient


# ---------------------------------------------------------------------------------------------
# The repros.


def _repro_four_classes():
  r = np.random.default_rng(0)
  y = r.integers(0, 4, 200)
  g = ((r.normal(size=(200, 128)) + 2 * r.normal(size=(4, 128))[y]) * 3).astype(np.float32)
  return g, y


def _repro_seventeen_classes():
  r = np.random.default_rng(1)
  y = r.integers(0, 17, 300)
  g = ((r.normal(size=(300, 33)) + 2 * r.normal(size=(17, 33))[y]) * 10).astype(np.float32)
  return g, y


def _all_paths(f, y):
  c = int(y.max()) + 1
  stats = tj.TransRateStats.init(f.shape[1], num_classes=c).update(f, y)
  return {
      "transrate": tj.transrate(f, y),
      "jit": jax.jit(functools.partial(tj.transrate, num_classes=c))(f, y),
      "transrate_loss": -tj.transrate_loss(f, y, num_classes=c),
      "transrate_many": tj.transrate_many([f], y, progress=False)[0],
      "from_batches": tj.transrate_from_batches([(f, y)], progress=False),
      "stats.finalize": stats.finalize(),
      "sharded (1 device)": tj.transrate_sharded(f, y),
  }


def test_repro_four_classes_rank_deficient_class_statistics():
  # The class statistics are d x d of rank n_c < d: streaming and sharding were NaN.
  f, y = _repro_four_classes()
  expected = reference.transrate(f.astype(np.float64), y)
  np.testing.assert_allclose(expected, 398.64, atol=0.01)
  for name, got in _all_paths(f, y).items():
    assert_close(got, expected, name)


def test_repro_seventeen_classes_n_c_below_d():
  # n_c ~ 18 < d = 33 < n: the cost rule used to put the classes on the d x d side (NaN).
  f, y = _repro_seventeen_classes()
  expected = reference.transrate(f.astype(np.float64), y)
  np.testing.assert_allclose(expected, 112.36, atol=0.01)
  for name, got in _all_paths(f, y).items():
    assert_close(got, expected, name)


def _repro_low_rank(scale):
  """[600, 96] features of rank 14 (8 shared directions + 6 class means) times ``scale``."""
  r = np.random.default_rng(0)
  y = r.integers(0, 6, 600)
  f = r.normal(size=(600, 8)) @ r.normal(size=(8, 96)) + r.normal(size=(6, 96))[y]
  return (f * scale).astype(np.float32), y


def test_repro_low_rank_features_rescued_in_float64():
  """Features of lower rank than their width (a linear map of fewer dimensions), at a scale
  where the float32 product's round-off eigenvalues (where the data have none) times
  1 / (n eps) exceed 1: the float32 Cholesky of I + Z^T Z / (n eps) fails (NaN). Eager calls
  then score the same float32 values in float64 and return that score in float32. Traced calls
  (``jit``, ``transrate_loss``) and the eigenvalue paths (vector eps, streaming, sharding) are
  not rescued; docs/numerics.md, "Rank deficiency in the data", says how far off they are."""
  from transrate_jax._src.transrate import kernel as transrate_kernel  # pylint: disable=import-outside-toplevel
  f, y = _repro_low_rank(3.0)
  expected = reference.transrate(f.astype(np.float64), y)
  raw = transrate_kernel.transrate_host_products(
      f, y, np.float32(1e-4), config=transrate_kernel.resolve_config(None, None), num_classes=6)
  assert np.isnan(float(raw))  # the case the rescue is for
  paths = {"transrate": tj.transrate(f, y),
           "transrate_many": tj.transrate_many([f], y, progress=False)[0],
           "score_many": tj.score_many("transrate", [f, f[:, :90]], y, progress=False)[0]}
  for name, got in paths.items():
    assert np.asarray(got).dtype == np.float32, name
    assert_close(got, expected, name)
  with pytest.raises(ValueError, match="not finite"):  # float64 cannot rescue a float64 NaN
    transrate_kernel.rescued_in_float64(jax.numpy.asarray(np.nan), f.astype(np.float64),
                                        lambda g: np.nan)


def test_repro_offset_1e6():
  # Single-pass float32 centring was 3.4% off; the oracle sees the same (offset) float32 values.
  f, y = _repro_four_classes()
  shifted = f + np.float32(1e6)
  expected = reference.transrate(shifted.astype(np.float64), y)
  for name, got in _all_paths(shifted, y).items():
    assert_close(got, expected, name + " + 1e6")


@pytest.mark.branch_free
def test_official_preset_with_offset():
  # Rows are normalised before centring: with an offset they agree in their leading digits.
  f, y = _repro_seventeen_classes()
  for offset in (1e2, 1e3):
    x = f + np.float32(offset)
    expected = reference.transrate(x.astype(np.float64), y, preset="official")
    chunks = [(x[:100], y[:100]), (x[100:], y[100:])]
    for name, got in {
        "transrate": tj.transrate(x, y, preset="official"),
        "from_batches": tj.transrate_from_batches(chunks, preset="official", progress=False),
        "sharded (1 device)": tj.transrate_sharded(x, y, preset="official"),
    }.items():
      assert_close(got, expected, f"official + {offset:g} {name}")


@pytest.mark.branch_free
def test_official_rows_with_large_offset():
  # normalize(normalize(F) - mean) at offsets 1e4 and 1e6: the normalised rows differ in their
  # ~|F - c| / |c| digits; the shifted form keeps them (the plain float32 difference is ~1e-4 and
  # ~1e-2 off here). (The official score itself at 1e4 also depends on the dtype's rank threshold:
  # a real eigenvalue 5e-7 below the largest is under float32's matrix_rank tolerance.)
  from transrate_jax._src.transrate import kernel as transrate_src  # pylint: disable=C0415
  f, _ = _repro_seventeen_classes()
  config = transrate_src.resolve_config(None, "official")
  for offset in (1e4, 1e6):
    x = f + np.float32(offset)
    x64 = x.astype(np.float64)
    nf = x64 / np.linalg.norm(x64, axis=1, keepdims=True)
    z64 = nf - nf.mean(axis=0)
    z64 /= np.linalg.norm(z64, axis=1, keepdims=True)
    z32 = np.asarray(jax.jit(transrate_src.preprocess, static_argnums=1)(x, config))
    assert z32.dtype == np.float32
    np.testing.assert_allclose(z32, z64, atol=1e-5, err_msg=f"offset {offset:g}")


@pytest.mark.branch_free
def test_eps_vector_paths_use_the_rank_bound():
  f, y = _repro_four_classes()
  eps = np.array([1e-4, 1e-3, 1e-2])
  expected = [reference.transrate(f.astype(np.float64), y, eps=e) for e in eps]
  for name, got in {
      "transrate": tj.transrate(f, y, eps=eps),
      "jit": jax.jit(functools.partial(tj.transrate, eps=eps, num_classes=4))(f, y),
      "from_batches": tj.transrate_from_batches([(f, y)], eps=eps, progress=False),
  }.items():
    for g, e in zip(np.asarray(got), expected):
      assert_close(g, e, f"eps vector {name}")


def _dead_units(seed=0, n=240, d=32, c=4, dead=12):
  """ReLU features in which ``dead`` of ``d`` units are exactly 0 on every sample (float32).

  The live units are active on (almost) every sample, so no unit is dead within one class only:
  that makes a class's ``Z_c^T Z_c`` singular in directions that are not zero rows, where float32
  Cholesky has a relative error of about 4e-4 too (NumPy's float32 Cholesky the same).
  """
  rng = np.random.default_rng(seed)
  y = rng.integers(0, c, n)
  pre = rng.normal(size=(n, d)) + 0.7 * rng.normal(size=(c, d))[y] + 4.0
  pre[:, rng.permutation(d)[:dead]] -= 100.0  # never active
  return np.maximum(pre, 0.0).astype(np.float32), y



@pytest.mark.parametrize("n,d", [(1000, 1280), (2000, 300)])
def test_dead_units_on_the_gram_side_keep_float32_accuracy(n, d, monkeypatch):
  """Many dead units where a term is on the Gram side (``n_c <= d``): ``Z_c Z_c^T`` then has rank
  at most the number of live units, below ``n_c``, and float32 round-off filled its null space
  (n = 1000, 33 live of 1280: 27% off float64 on every path; n = 2000 of 300: 4e-3). An eager call
  drops the constant columns first (``kernel.informative_columns``: the same score in exact
  arithmetic) and is float32-accurate, on the host path, the compiled path and in a CPU sweep."""
  from transrate_jax._src import backend  # pylint: disable=import-outside-toplevel
  from transrate_jax._src.transrate import kernel  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(3)
  y = np.arange(n) % 10
  f = np.zeros((n, d), np.float32)
  f[:, :33] = 3.0 * rng.normal(size=(n, 33)) + 2.0 * np.eye(10, 33)[y] + 1.5
  f[:, 40] = 7.0  # a constant live-looking unit (a bias): also exactly 0 after centring
  want = reference.transrate(f.astype(np.float64), y)
  got = {"default": tj.transrate(f, y)}
  if backend.policy().one_matrix_per_program:  # the CPU's eager sweep scores matrix by matrix;
    # the accelerators' vmapped sweep keeps each bucket's width and the error (docs/numerics.md)
    got["sweep"] = tj.transrate_many([f, f[:, :700]], y)[0]
  monkeypatch.setenv(kernel.HOST_PRODUCTS_ENV, "0")
  got["compiled"] = tj.transrate(f, y)
  got["tllib"] = tj.transrate(f, y, preset="tllib")
  want_tllib = reference.transrate(f.astype(np.float64), y, weighting="uniform")
  for name, value in got.items():
    expected = want_tllib if name == "tllib" else want
    assert abs(float(value) - expected) <= 5e-5 * abs(expected), (name, float(value), expected)
  kept = kernel.informative_columns(f, y, kernel.resolve_config(None, None))
  assert kept.shape == (n, 33)
  constant = np.ones((n, d), np.float32)  # every column constant, as a JAX array: one is kept
  assert kernel.informative_columns(jax.numpy.asarray(constant), y,
                                    kernel.resolve_config(None, None)).shape == (n, 1)
  # A JAX array takes the same path as the NumPy array (the compiled one here: HOST_PRODUCTS_ENV).
  assert float(tj.transrate(jax.numpy.asarray(f), y)) == pytest.approx(float(got["compiled"]),
                                                                       rel=1e-6)
  official = kernel.informative_columns(f, y, kernel.resolve_config(None, "official"))
  assert official.shape == (n, 34)  # rows are L2-normalised first: only zero columns go


def test_dead_units_keep_float32_accuracy_on_every_eigenvalue_path():
  """Exactly-zero feature columns (dead ReLU units) on the paths that take eigenvalues.

  The official preset's total rate (its rank rule needs the eigenvalues), a vector ``eps`` and the
  streaming statistics all take ``log(1 + a lambda)`` from float32 eigenvalues; the eigensolver
  returned the exact zeros of the dead units as ``~ulp(lambda_max)`` round-off: relative errors of
  up to 3.5e-4 (streaming) and 5e-5 (vector ``eps``) here, against 5e-7 on the scalar Cholesky
  path. ``numerics.psd_eigvalsh`` now decouples zero rows (all paths within 7e-6); the bound is
  2e-5.
  """
  f, y = _dead_units()
  assert np.sum(np.all(f == 0.0, axis=0)) == 12
  eps = np.array([1e-4, 1e-3])
  for preset in (None, "official"):
    expected = [reference.transrate(f.astype(np.float64), y, eps=e, preset=preset) for e in eps]
    got = {
        "transrate": [tj.transrate(f, y, eps=e, preset=preset) for e in eps],
        "jit": [jax.jit(functools.partial(tj.transrate, eps=e, preset=preset, num_classes=4))(f, y)
                for e in eps],
        "eps vector": tj.transrate(f, y, eps=eps, preset=preset),
        "jit eps vector": jax.jit(functools.partial(tj.transrate, eps=eps, preset=preset,
                                                    num_classes=4))(f, y),
        "from_batches": tj.transrate_from_batches([(f[:120], y[:120]), (f[120:], y[120:])],
                                                  eps=eps, preset=preset, progress=False),
    }
    for name, values in got.items():
      for g, e in zip(np.asarray(values, np.float64), expected):
        assert abs(g - e) <= 2e-5 * abs(e), f"{preset} {name}: {g} vs {e} (rel {(g - e) / e:.1e})"


@pytest.mark.branch_free
def test_psd_eigvalsh_returns_exact_zeros_for_zero_rows():
  """Zero rows and columns give eigenvalues exactly 0; the others those of the nonzero block."""
  from transrate_jax._src import numerics  # pylint: disable=import-outside-toplevel
  f, _ = _dead_units(seed=1)
  m = f.T @ f  # [32, 32], 12 zero rows and columns
  live = np.any(m != 0, axis=0)
  expected = np.linalg.eigvalsh(m[np.ix_(live, live)].astype(np.float64))
  stacked = np.stack([m, 2.0 * m])
  for lam in (jax.jit(numerics.psd_eigvalsh)(m), jax.vmap(numerics.psd_eigvalsh)(stacked)[0]):
    lam = np.asarray(lam)
    assert np.all(lam[:12] == 0.0)
    np.testing.assert_allclose(lam[12:], expected, rtol=1e-5, atol=1e-6 * expected.max())


# ---------------------------------------------------------------------------------------------
# transrate_sharded on 8 forced CPU devices, in a subprocess running this file.


def _sharded_worker():
  from transrate_jax._src import sharding  # pylint: disable=import-outside-toplevel
  mesh = sharding.default_mesh()
  out = {"devices": jax.device_count(), "cases": []}
  problems = [make_case(s) for s in SEEDS]
  for f, y, kw in problems:
    got = sharding.transrate_sharded(f, y, mesh=mesh, **kw)
    kw64 = dict(kw)
    out["cases"].append({"n": int(f.shape[0]), "d": int(f.shape[1]), "got": float(got),
                         "expected": float(reference.transrate(f.astype(np.float64), y, **kw64))})
  print(json.dumps(out))


def test_property_sharded_eight_devices():
  env = dict(os.environ)
  root = str(pathlib.Path(__file__).resolve().parent.parent)
  env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
  proc = subprocess.run([sys.executable, os.path.abspath(__file__)], capture_output=True,
                        text=True, timeout=240, env=env, check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(proc.stdout.strip().splitlines()[-1])
  assert result["devices"] == 8
  assert any(case["n"] % 8 for case in result["cases"])  # uneven rows per device
  for case in result["cases"]:
    assert_close(case["got"], case["expected"], f"sharded {case}")


if __name__ == "__main__":
  _sharded_worker()


@pytest.mark.both_branches
@pytest.mark.parametrize("branches", ["cpu", "accelerator"])
def test_large_common_offset_keeps_float32_accuracy_on_both_branches(branches):
  """60 x 8, 3 classes, offset up to 1e7: within 2e-5 of float64 on the same float32 data, eager,
  under jit (traced labels) and with an eps vector, on the CPU's branches and the accelerator's.

  The accelerator branch's eager program once lost the second centring pass where XLA recomputed
  the centring inside a gather with a differently rounded mean (8e-3 at 1e6, 0.45 at 1e7;
  numerics.center shifts by a data row instead)."""
  from transrate_jax._src import backend  # pylint: disable=import-outside-toplevel
  rng = np.random.default_rng(0)
  base = rng.normal(size=(60, 8))
  y = np.arange(60) % 3
  with backend.accelerator_branches(branches == "accelerator"):
    jitted = jax.jit(lambda a, l: tj.transrate(a, l, num_classes=3))
    for offset in (1e3, 1e5, 1e6, 1e7):
      f = (base + offset).astype(np.float32)
      want = reference.transrate(f.astype(np.float64), y)
      for got in (tj.transrate(f, y), jitted(f, y), tj.transrate(f, y, eps=np.array([1e-4]))[0]):
        assert np.asarray(got).dtype == np.float32
        np.testing.assert_allclose(float(got), want, rtol=2e-5, err_msg=f"offset {offset}")
