"""transrate_loss: value against the float64 oracle, gradients against finite differences and
against autodiff, mini-batch edge cases, and use inside Flax/optax training steps."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import reference
from transrate_jax._src import regularizer
from transrate_jax._src.regularizer import transrate_loss

# No test here reads a platform branch of the backend policy (checked on every run), so the
# accelerator-branch rerun leaves this file out (tests/branch_reads.py).
pytestmark = pytest.mark.branch_free


@pytest.fixture(autouse=True)
def _x64():
  with jax.enable_x64(True):
    yield


def _data(n, d, num_classes, seed, *, unit_rows=False, dtype=np.float64):
  rng = np.random.default_rng(seed)
  labels = rng.integers(0, num_classes, n)
  f = rng.normal(size=(n, d)) + 2.0 * rng.normal(size=(num_classes, d))[labels]
  if unit_rows:
    f /= np.linalg.norm(f, axis=1, keepdims=True)
  return f.astype(dtype), labels.astype(np.int32)


# (n, d, C): Gram side for R(Z) and the classes; covariance side for R(Z) with per-class blocks
# and covariance slots; covariance side for R(Z) with the masked-Gram class layout and one slot.
SHAPES = {"gram": (12, 30, 3), "covariance": (60, 5, 3), "mixed": (40, 20, 10)}
LAYOUTS = ((True, True), (False, True), (True, False), (False, False))


def test_shapes_pick_the_layouts_they_are_named_for():
  # Guards the parametrisation below: each SHAPES entry exercises the layouts its name says.
  # (R(Z) on the Gram side?, class layout for n_c <= d, covariance slots for n_c > d.)
  expect = {"gram": (True, "masked", 0), "covariance": (False, "blocks", 3),
            "mixed": (False, "masked", 1)}
  from transrate_jax._src.transrate.kernel import dense_layout, gram_side
  for name, (n, d, c) in SHAPES.items():
    layout = dense_layout(n, d, c)
    got = (gram_side(n, d), layout.small, layout.large_slots)
    assert got == expect[name], name


@pytest.mark.parametrize("weighting", ["prior", "uniform"])
@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_value_is_minus_transrate_float64(shape, weighting):
  n, d, c = SHAPES[shape]
  f, y = _data(n, d, c, seed=0)
  expected = -reference.transrate(f, y, 1e-3, weighting, num_classes=c)
  for gradient in regularizer.GRADIENTS:
    got = transrate_loss(f, y, num_classes=c, eps=1e-3, weighting=weighting, gradient=gradient)
    assert got.dtype == jnp.float64
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)
  if shape != "mixed":
    return
  # Traced labels inside a user's jit.
  jitted = jax.jit(functools.partial(transrate_loss, num_classes=c, eps=1e-3,
                                     weighting=weighting))
  np.testing.assert_allclose(jitted(f, y), expected, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("weighting", ["prior", "uniform"])
def test_value_float32(weighting):
  f, y = _data(96, 48, 5, seed=1, unit_rows=True)
  expected = -reference.transrate(f, y, 1e-4, weighting, num_classes=5)
  for gradient in regularizer.GRADIENTS:
    got = transrate_loss(f.astype(np.float32), y, num_classes=5, weighting=weighting,
                         gradient=gradient)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
  # Half precision is upcast to float32.
  got = transrate_loss(f.astype(np.float16), y, num_classes=5, weighting=weighting)
  assert got.dtype == jnp.float32


@pytest.mark.parametrize("shape", sorted(SHAPES))
def test_check_grads_first_order(shape):
  n, d, c = SHAPES[shape]
  f, y = _data(n, d, c, seed=2, unit_rows=True)
  # Differentiable in features and eps (through log eps: a well-scaled finite-difference step).
  fn = jax.jit(lambda f, log_eps: transrate_loss(f, y, num_classes=c, eps=jnp.exp(log_eps)))
  check_grads(fn, (f, np.log(1e-2)), order=1, modes=("fwd", "rev"), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", ["gram", "covariance"])
def test_check_grads_second_order(shape):
  # The custom JVP rule is itself differentiated by JAX: Hessian-vector products hold.
  n, d, c = (8, 12, 2) if shape == "gram" else (16, 3, 2)
  f, y = _data(n, d, c, seed=2, unit_rows=True)
  fn = jax.jit(lambda f: transrate_loss(f, y, num_classes=c, eps=1e-2))
  check_grads(fn, (f,), order=2, modes=("rev",), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("shape", ["gram", "covariance"])
def test_autodiff_path_check_grads(shape):
  n, d, c = SHAPES[shape]
  f, y = _data(n, d, c, seed=3, unit_rows=True)
  fn = jax.jit(lambda f: transrate_loss(f, y, num_classes=c, eps=1e-2, gradient="autodiff"))
  check_grads(fn, (f,), order=1, modes=("rev",), atol=1e-5, rtol=1e-5)


# Every layout is forced on each input, so both inputs exercise both sides; n < d and n > d.
@pytest.mark.parametrize("shape, weighting", [("gram", "uniform"), ("mixed", "prior")])
def test_every_layout_and_autodiff_give_the_same_gradient(shape, weighting):
  n, d, c = SHAPES[shape]
  f, y = _data(n, d, c, seed=4)
  eps = 1e-3
  auto = jax.grad(lambda f: transrate_loss(f, y, num_classes=c, eps=eps, weighting=weighting,
                                           gradient="autodiff"))(f)
  expected_value = -reference.transrate(f, y, eps, weighting, num_classes=c)
  for layout in LAYOUTS:
    fn = lambda f, layout=layout: regularizer._loss_analytic(
        f, jnp.asarray(y), jnp.asarray(eps), c, weighting, layout)
    value, grad = jax.jit(jax.value_and_grad(fn))(f)
    np.testing.assert_allclose(value, expected_value, rtol=1e-10, err_msg=str(layout))
    np.testing.assert_allclose(grad, auto, rtol=1e-8, atol=1e-10 * np.abs(auto).max(),
                               err_msg=str(layout))
  # Gradient rows sum to zero (centring's Jacobian).
  np.testing.assert_allclose(auto.sum(axis=0), 0.0, atol=1e-10 * np.abs(auto).max())


def _edge_cases():
  rng = np.random.default_rng(5)
  cases = {}
  y = np.array([0, 0, 0, 1, 1, 1, 3, 3, 3, 3])  # class 2 absent from the batch
  cases["absent_class"] = (rng.normal(size=(10, 6)), y, 4)
  y = np.array([0, 0, 0, 0, 1, 1, 1, 2])  # class 2 has one sample
  cases["one_sample_class"] = (rng.normal(size=(8, 6)), y, 3)
  f = rng.normal(size=(8, 6))
  f[1] = f[0]
  f[5] = f[4] = f[3]
  cases["duplicate_rows"] = (f, np.array([0, 0, 1, 1, 1, 1, 2, 2]), 3)
  cases["n_lt_d"] = (rng.normal(size=(6, 40)), np.array([0, 1, 2, 0, 1, 2]), 3)
  f = rng.normal(size=(9, 5))
  y = np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
  f[y == 1] = 0.0  # all zero in one class
  cases["zero_class"] = (f, y, 3)
  cases["all_zero"] = (np.zeros((6, 4)), np.array([0, 1, 0, 1, 0, 1]), 2)
  cases["one_class"] = (rng.normal(size=(7, 5)), np.zeros(7, int), 3)
  return cases


EDGE_CASES = _edge_cases()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("case", sorted(EDGE_CASES))
def test_edge_cases_finite_value_and_gradient(case, dtype):
  f, y, c = EDGE_CASES[case]
  expected = -reference.transrate(f, y, 1e-4, "prior", num_classes=c)
  f = f.astype(dtype)
  grads = {}
  for gradient in regularizer.GRADIENTS:
    fn = jax.jit(jax.value_and_grad(
        lambda f, y, g=gradient: transrate_loss(f, y, num_classes=c, gradient=g)))
    value, grad = fn(f, y)  # labels traced
    assert np.isfinite(value) and np.all(np.isfinite(grad)), (case, gradient)
    # float32: the loss is a difference of log-determinants of size ~ R(Z); tie atol to it.
    rtol = 1e-10 if dtype == np.float64 else 1e-4
    scale = max(1.0, reference.coding_rate(f - f.mean(axis=0), 1e-4))
    np.testing.assert_allclose(value, expected, rtol=rtol, atol=rtol * scale)
    grads[gradient] = np.asarray(grad, np.float64)
  scale = max(np.abs(grads["autodiff"]).max(), 1.0)
  tol = 1e-8 if dtype == np.float64 else 1e-3
  np.testing.assert_allclose(grads["analytic"], grads["autodiff"], atol=tol * scale)


def test_edge_case_gradients_match_finite_differences():
  for case in ("absent_class", "one_sample_class", "duplicate_rows", "zero_class"):
    f, y, c = EDGE_CASES[case]
    check_grads(jax.jit(lambda f: transrate_loss(f, y, num_classes=c, eps=1e-2)), (f,), order=1,
                modes=("rev",), atol=1e-5, rtol=1e-5)


def test_vmap_over_batches_and_eps():
  f, y = _data(32, 12, 4, seed=6)
  fs = np.stack([f, 2.0 * f, f[::-1].copy()])
  ys = np.stack([y, y, y[::-1].copy()])
  fn = lambda f, y: transrate_loss(f, y, num_classes=4, eps=1e-3)
  values, grads = jax.vmap(jax.value_and_grad(fn))(fs, ys)
  for i in range(3):
    np.testing.assert_allclose(values[i], -reference.transrate(fs[i], ys[i], 1e-3,
                                                               num_classes=4), rtol=1e-10)
    np.testing.assert_allclose(grads[i], jax.grad(fn)(fs[i], ys[i]), rtol=1e-10, atol=1e-14)
  eps = np.array([1e-4, 1e-3, 1e-1])
  per_eps = jax.vmap(lambda e: transrate_loss(f, y, num_classes=4, eps=e))(eps)
  for e, v in zip(eps, per_eps):
    np.testing.assert_allclose(v, -reference.transrate(f, y, e, num_classes=4), rtol=1e-10)


def test_flax_model_jit_grad_and_optax_steps_decrease_the_loss():
  from flax import nnx
  import optax

  f, y = _data(64, 10, 4, seed=7)
  f = f.astype(np.float32)

  class Net(nnx.Module):

    def __init__(self, rngs):
      self.l1 = nnx.Linear(10, 32, rngs=rngs)
      self.l2 = nnx.Linear(32, 16, rngs=rngs)

    def __call__(self, x):
      h = self.l2(nnx.relu(self.l1(x)))
      return h / jnp.linalg.norm(h, axis=1, keepdims=True)

  model = Net(nnx.Rngs(0))
  optimizer = nnx.Optimizer(model, optax.adam(1e-2), wrt=nnx.Param)

  def loss_fn(model, x, labels):
    return transrate_loss(model(x), labels, num_classes=4)

  # jit(grad(...)) of the parameters: finite, nonzero, and equal to the autodiff path.
  grads = nnx.jit(nnx.grad(loss_fn))(model, f, y)
  grads_auto = nnx.jit(nnx.grad(
      lambda m, x, labels: transrate_loss(m(x), labels, num_classes=4, gradient="autodiff")))(
          model, f, y)
  leaves = jax.tree.leaves(grads)
  assert all(np.all(np.isfinite(g)) for g in leaves)
  assert any(np.abs(g).max() > 0 for g in leaves)
  for g, h in zip(leaves, jax.tree.leaves(grads_auto)):
    np.testing.assert_allclose(g, h, rtol=2e-3, atol=2e-3 * max(np.abs(h).max(), 1e-6))

  @nnx.jit
  def step(model, optimizer, x, labels):
    loss, grads = nnx.value_and_grad(loss_fn)(model, x, labels)
    optimizer.update(model, grads)
    return loss

  losses = [float(step(model, optimizer, f, y)) for _ in range(8)]
  assert np.all(np.isfinite(losses))
  assert losses[-1] < losses[0] - 0.1, losses


def test_plain_optax_update_on_features():
  import optax
  f, y = _data(40, 8, 4, seed=8)
  params = jnp.asarray(f)
  tx = optax.sgd(1e-2)
  state = tx.init(params)

  @jax.jit
  def step(params, state):
    unit = lambda p: p / jnp.linalg.norm(p, axis=1, keepdims=True)
    loss, g = jax.value_and_grad(lambda p: transrate_loss(unit(p), y, num_classes=4))(params)
    updates, state = tx.update(g, state, params)
    return optax.apply_updates(params, updates), state, loss

  losses = []
  for _ in range(5):
    params, state, loss = step(params, state)
    losses.append(float(loss))
  assert np.all(np.diff(losses) < 0), losses


def test_input_checks():
  f, y = _data(10, 4, 3, seed=9)
  with pytest.raises(ValueError, match="weighting"):
    transrate_loss(f, y, num_classes=3, weighting="balanced")
  with pytest.raises(ValueError, match="gradient"):
    transrate_loss(f, y, num_classes=3, gradient="numeric")
  with pytest.raises(ValueError, match="num_classes"):
    transrate_loss(f, y, num_classes=3.0)
  with pytest.raises(ValueError, match="num_classes"):
    transrate_loss(f, y, num_classes=None)
  with pytest.raises(TypeError):
    transrate_loss(f, y, 3)  # num_classes is keyword-only
  with pytest.raises(ValueError, match="< num_classes"):
    transrate_loss(f, y, num_classes=2)
  with pytest.raises(ValueError, match="NaN"):
    transrate_loss(np.where(np.eye(10, 4) > 0, np.nan, f), y, num_classes=3)
  with pytest.raises(ValueError, match="eps"):
    transrate_loss(f, y, num_classes=3, eps=0.0)
  with pytest.raises(ValueError, match="scalar"):
    transrate_loss(f, y, num_classes=3, eps=np.array([1e-3, 1e-2]))
  with pytest.raises(ValueError, match="2-D"):
    transrate_loss(f[0], y, num_classes=3)
  with pytest.raises(ValueError, match="entries"):
    transrate_loss(f, y[:-1], num_classes=3)
  with pytest.raises(ValueError, match="integer"):
    transrate_loss(f, y.astype(np.float32), num_classes=3)
  # Traced inputs: no value checks, so out-of-range labels cannot raise; shapes still checked.
  with pytest.raises(ValueError, match="entries"):
    jax.jit(lambda f, y: transrate_loss(f, y, num_classes=3))(f, y[:-1])
