"""Differentiable TransRate: minus TransRate as a loss term for training loops (optax, Flax).

    Z    = F - mean(F, axis=0)
    L(F) = -(R(Z) - sum_c w_c R_c),   R_c = 1/2 logdet(I + Z_c^T Z_c / (n_c eps))

Minimising ``L`` on a mini-batch's features maximises their TransRate: the coding rate of the whole
batch grows while the coding rate of each class shrinks (the "maximal coding rate reduction"
objective of Yu et al., NeurIPS 2020).

Gradient, for ``a = 1 / (m eps)`` and ``Z`` with ``m`` rows:

    d/dZ [1/2 logdet(I + a Z^T Z)] = a Z (I + a Z^T Z)^{-1} = a (I + a Z Z^T)^{-1} Z

a Cholesky solve on the side where the term's matrix has full rank (the float32 policy,
docs/numerics.md: the Gram side iff ``m <= d``), with the factor the value already computed. With
traced labels the classes are laid out as :func:`kernel.dense_layout` says: classes with
``n_c <= d`` share one ``n x n`` Gram matrix masked to its class-diagonal blocks (its Cholesky
factor is block diagonal too, so a single solve gives every such class's gradient) or per-class
row blocks, and the few classes that can have ``n_c > d`` get ``d x d`` covariance slots. When
both terms are on the Gram side (n <= d) the two ``n x n`` inverses are formed from their factors
(``L^{-T} L^{-1}``) and combined, so that ``Z`` is multiplied once: triangular solves against the
wide ``[n, d]`` right-hand side run far below matmul speed. The centring (shifted,
``numerics.center``) has the Jacobian ``dL/dF = dL/dZ - mean(dL/dZ, axis=0)``; and since ``L``
depends on ``(F, eps)`` only through ``Z / sqrt(eps)``, ``dL/deps = -<dL/dZ, Z> / (2 eps)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from transrate_jax._src import linalg
from transrate_jax._src import numerics
from transrate_jax._src.transrate import kernel
from transrate_jax._src import validation

GRADIENTS = ("analytic", "autodiff")


def _cholesky(a: jax.Array) -> jax.Array:
  return linalg.cholesky(numerics.symmetrize(a))


def _half_logdet_from_chol(chol: jax.Array) -> jax.Array:
  """``1/2 logdet(L L^T)`` per diagonal entry: ``log(diag(L))``, [..., m]."""
  return jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1))


def _spd_inverse_from_chol(chol: jax.Array) -> jax.Array:
  """``(L L^T)^{-1} = L^{-T} L^{-1}`` for a lower Cholesky factor ``L`` [m, m] (gradients only)."""
  linv = linalg.triangular_inverse(chol, lower=True)
  return jnp.matmul(jnp.swapaxes(linv, -1, -2), linv, precision=numerics.HIGHEST)


def _forced_layout(class_layout, num_classes: int):
  """A test's forced class layout: True (masked Gram, every class), False (C covariances), or a
  :class:`kernel.DenseLayout`."""
  if isinstance(class_layout, kernel.DenseLayout):
    return class_layout
  if class_layout:
    return kernel.DenseLayout("masked", 0, None)
  return kernel.DenseLayout(None, num_classes, 0)


def _loss_parts(features, labels, eps, *, num_classes: int, weighting: str, with_grad: bool,
                layout=None):
  """The loss ``-TrR`` and, with ``with_grad``, ``dL/dZ`` ([n, d]) and the centred ``Z``.

  Every term is on its full-rank side (docs/numerics.md): ``R(Z)`` on the Gram side iff
  ``n <= d`` (its ones null direction filled, :func:`kernel.fill_centring_null`), the
  classes as :func:`kernel.dense_layout` lays them out (Gram side for ``n_c <= d``,
  covariance slots for the few classes that can have ``n_c > d``), a class holding every row as
  ``R(Z)``.

  Args:
    features: [n, d] float.
    labels: [n] int32 in ``0..num_classes-1``.
    eps: scalar float (same dtype as ``features``).
    num_classes: static C.
    weighting: "prior" or "uniform".
    with_grad: also return the gradient with respect to the centred features.
    layout: None (the default, exact in float32), or a static ``(total_gram, class_layout)``
      forcing the side of ``R(Z)`` and the class layout (True: masked Gram for every class;
      False: covariances for every class; or a ``DenseLayout``), for float64 tests.

  Returns:
    ``loss`` (scalar), or ``(loss, grad_z [n, d], z [n, d])``.
  """
  n, d = features.shape
  dtype = features.dtype
  z = numerics.center(features, axis=0)
  counts = jnp.zeros((num_classes,), dtype).at[labels].add(1.0)
  weights = kernel.class_weights(counts, n, weighting)  # [C]
  inv = kernel.safe_inverse(counts)  # [C], 1 / n_c (0 if empty)
  a_total = 1.0 / (n * eps)

  if layout is None:
    total_gram = kernel.gram_side(n, d)
    plan = kernel.dense_layout(n, d, num_classes)
  else:
    total_gram, plan = layout[0], _forced_layout(layout[1], num_classes)
  small, large = kernel.dense_class_sets(counts, n, plan)
  g = numerics.gram(z) if (total_gram or plan.small == "masked") else None

  # R(Z): 1/2 logdet(I + a Z^T Z), Gram (null direction filled) or covariance side.
  if total_gram:
    filled, gamma = kernel.fill_centring_null(g)
    chol_t = _cholesky(jnp.eye(n, dtype=dtype) + a_total * filled)
    rate_total = jnp.sum(_half_logdet_from_chol(chol_t)) - 0.5 * jnp.log1p(a_total * gamma)
  else:
    chol_t = _cholesky(jnp.eye(d, dtype=dtype) + a_total * numerics.covariance(z))
    rate_total = jnp.sum(_half_logdet_from_chol(chol_t))

  # sum_c w_c R_c: a class holding every row is R(Z) (kernel.assemble adds it; the gradient
  # below needs its weight); the rest on their full-rank sides.
  w_full = kernel.full_class_weight(weights, counts, n)
  rate_class = jnp.zeros((), dtype)
  if plan.small == "masked":
    mat, row_small = kernel.masked_class_gram(g, labels, small, inv)
    row_w = jnp.where(row_small, weights[labels], 0.0)  # [n]: w_c of each small row's class
    row_inv = jnp.where(row_small, inv[labels], 0.0)  # [n]: 1 / n_c of each small row's class
    chol_c = _cholesky(jnp.eye(n, dtype=dtype) + mat / eps)
    rate_class = rate_class + jnp.sum(row_w * _half_logdet_from_chol(chol_c))
  elif plan.small == "blocks":
    blocks, idx, _ = kernel.class_row_blocks(z, labels, counts, small, min(n, d))
    b = blocks.shape[1]
    w_small = jnp.where(small, weights, 0.0)
    a_small = jnp.where(small, inv, 0.0) / eps
    chol_b = _cholesky(jnp.eye(b, dtype=dtype) + a_small[:, None, None] * numerics.gram(blocks))
    rate_class = rate_class + jnp.sum(w_small * jnp.sum(_half_logdet_from_chol(chol_b), axis=-1))
  if plan.large_slots:
    ids, on, onehot, covs = kernel.large_class_covs(z, labels, counts, large,
                                                           plan.large_slots)
    a_large = jnp.where(on, inv[ids], 0.0) / eps
    w_large = jnp.where(on, weights[ids], 0.0)
    chol_l = _cholesky(jnp.eye(d, dtype=dtype) + a_large[:, None, None] * covs)  # [K, d, d]
    rate_class = rate_class + jnp.sum(w_large * jnp.sum(_half_logdet_from_chol(chol_l), axis=-1))

  loss = -kernel.assemble(rate_total, rate_class, weights, counts, n,
                          config=kernel.Config(weighting=weighting))
  if not with_grad:
    return loss

  if total_gram and plan.small == "masked" and not plan.large_slots:
    # Both terms on the Gram side (n <= d): one [n, n] matrix acting on Z,
    #   dL/dZ = (D_w (I + D_s G_mask / eps)^{-1} D_s / eps - (1 - w_full) a (I + a G)^{-1}) Z,
    # with each inverse as L^{-T} L^{-1} (one triangular solve against I, one matmul; block
    # diagonal stays block diagonal; the filled total factor gives the same product with Z).
    # 2 trsm(n, n) + 2 n^3 + 1 n^2 d matmul flops, instead of 4 triangular solves against the
    # [n, d] Z: far faster where d >= n, as trsm runs well below matmul speed.
    inv_t = _spd_inverse_from_chol(chol_t)
    inv_c = _spd_inverse_from_chol(chol_c)
    mat = (row_w[:, None] * inv_c * (row_inv / eps)[None, :]) - (1.0 - w_full) * a_total * inv_t
    grad_z = jnp.matmul(numerics.symmetrize(mat), z, precision=numerics.HIGHEST)
    return loss, grad_z, z
  # d R(Z) / dZ = a (I + a Z Z^T)^{-1} Z = a Z (I + a Z^T Z)^{-1}.
  if total_gram:
    grad_total = a_total * linalg.cho_solve(chol_t, z)
  else:
    grad_total = a_total * linalg.cho_solve(chol_t, z.T).T
  # d (sum_c w_c R_c) / dZ: row i gets w_c a_c (I + a_c Z_c Z_c^T)^{-1} Z_c for its class c.
  grad_class = w_full * grad_total
  if plan.small == "masked":
    grad_class = grad_class + row_w[:, None] * linalg.cho_solve(chol_c,
                                                             (row_inv / eps)[:, None] * z)
  elif plan.small == "blocks":
    per_block = (w_small * a_small)[:, None, None] * linalg.cho_solve(chol_b, blocks)
    grad_class = grad_class + jnp.zeros_like(z).at[idx.reshape(-1)].add(
        per_block.reshape(-1, d))  # padding positions carry zero rows
  if plan.large_slots:
    coef = w_large * a_large  # [K]: w_c a_c
    # [K, d, n], rows of other classes zeroed
    rhs = jnp.einsum("nk,ni->kin", onehot * coef, z, precision=numerics.HIGHEST)
    grad_class = grad_class + jnp.sum(linalg.cho_solve(chol_l, rhs), axis=0).T
  return loss, grad_class - grad_total, z


@functools.partial(jax.custom_jvp, nondiff_argnums=(3, 4, 5))
def _loss_analytic(features, labels, eps, num_classes, weighting, layout=None):
  return _loss_parts(features, labels, eps, num_classes=num_classes, weighting=weighting,
                     with_grad=False, layout=layout)


@_loss_analytic.defjvp
def _loss_analytic_jvp(num_classes, weighting, layout, primals, tangents):
  features, labels, eps = primals
  d_features, _, d_eps = tangents
  loss, grad_z, z = _loss_parts(features, labels, eps, num_classes=num_classes,
                                weighting=weighting, with_grad=True, layout=layout)
  # Centring's Jacobian: <grad_z, dF - mean(dF)> = <grad_z - mean(grad_z), dF>. Elementwise
  # products and sums (not dot_general), so no reduced-precision matmul passes on GPU/TPU.
  grad_f = grad_z - jnp.mean(grad_z, axis=0, keepdims=True)
  grad_eps = -jnp.sum(grad_z * z) / (2.0 * eps)
  return loss, jnp.sum(grad_f * d_features) + grad_eps * d_eps


def _loss_autodiff(features, labels, eps, num_classes, weighting):
  config = kernel.Config(weighting=weighting)
  return -kernel.transrate_kernel(features, labels, None, None, features.shape[1], eps,
                                         config=config, num_classes=num_classes,
                                         eps_vector=False)


@functools.partial(jax.jit, static_argnames=("num_classes", "weighting", "gradient"))
def _transrate_loss_jit(features, labels, eps, *, num_classes, weighting, gradient):
  eps = jnp.asarray(eps, features.dtype)
  if gradient == "analytic":
    return _loss_analytic(features, labels, eps, num_classes, weighting, None)
  return _loss_autodiff(features, labels, eps, num_classes, weighting)


def transrate_loss(features, labels, *, num_classes: int, eps=1e-4, weighting: str = "prior",
                   gradient: str = "analytic") -> jax.Array:
  r"""Minus TransRate of a batch of features: a loss that, minimised, maximises TransRate.

  .. math::
     Z = F - \bar F, \qquad
     \mathcal L(F) = -\Big(\tfrac12\log\det\big(I + \tfrac{Z^\top Z}{n\epsilon}\big)
       - \sum_c w_c\,\tfrac12\log\det\big(I + \tfrac{Z_c^\top Z_c}{n_c\epsilon}\big)\Big)

  with ``Z_c`` the rows of class ``c`` and ``w_c = n_c / n`` ("prior") or ``1 / C`` ("uniform").
  Works inside ``jax.jit``, ``jax.vmap`` and ``jax.grad`` (labels may be traced: ``num_classes`` is
  static). A mini-batch may miss classes (they contribute zero), hold one sample of a class,
  duplicate rows, have ``n < d`` or a class whose features are all zero: value and gradient stay
  finite.

  The gradient ``gradient="analytic"`` (default) is a ``jax.custom_jvp`` rule:
  ``d/dZ 1/2 logdet(I + a Z^T Z) = a (I + a Z Z^T)^{-1} Z``, from the Cholesky factors the value
  already computed, on the smaller side (for the class terms one solve with the factor of a
  block-diagonal masked Gram covers all classes), then the centring's Jacobian
  ``dL/dF = dL/dZ - mean(dL/dZ)``. Being a JVP rule it supports forward mode (``jax.jvp``,
  ``jax.jacfwd``) and second order (``jax.hessian``, grad of grad): the rule itself is
  differentiated by JAX. ``gradient="autodiff"`` differentiates through the Cholesky kernel of
  :func:`transrate` instead: same value and, measured, the same accuracy against finite
  differences, but slower forward+backward (about 1.6-1.8x on CPU at (n, d, C) = (256, 512, 10)
  and (1024, 2048, 100); benchmarks/bench_regularizer.py) and it keeps the factorisations as
  residuals where the analytic rule keeps one [n, d] gradient.

  The value is scale dependent: multiplying ``F`` by ``s > 1`` raises TransRate (by about
  ``(rank Z - sum_c w_c rank Z_c) log s``), so a network can lower this loss by inflating its
  features. As in MCR^2, L2-normalise the rows first (``f / ||f||``) or otherwise fix their scale.
  Every term is factorised on its full-rank side (docs/numerics.md), so float32 is accurate for
  any class sizes; the conditioning of ``I + Z^T Z / (n eps)`` itself (about
  ``max ||z_i||^2 / eps``) still bounds the attainable accuracy.

  Args:
    features: [n, d] float (NumPy or JAX; half precision is upcast to float32), n >= 2.
    labels: [n] integer labels in ``0..num_classes-1`` (may be traced).
    num_classes: C, a static Python int (keyword-only; it sets shapes).
    eps: distortion ``eps > 0`` (default 1e-4), a scalar (may be traced; it is differentiable).
    weighting: "prior" (``w_c = n_c / n``, default) or "uniform" (``w_c = 1 / C``).
    gradient: "analytic" (default) or "autodiff".

  Returns:
    A scalar in the features' float dtype: ``-transrate(features, labels, eps=eps,
    weighting=weighting, num_classes=num_classes)``.

  Raises:
    ValueError: bad shapes or dtypes, an unknown weighting or gradient, ``num_classes`` not a
      positive int; for concrete inputs also NaN/inf features, labels out of range, eps <= 0,
      and a loss that is not finite although the inputs are (in float32: features whose scale
      overflows the products, ``n max|f|^2`` or ``max|f|^2 / eps`` beyond 3.4e38, e.g.
      ``|f| ~ 1e18``; rescale or L2-normalise them, or pass float64). Under ``jit``/``grad``
      the value is not checked.

  Example:
    >>> import jax, jax.numpy as jnp, transrate_jax as tj
    >>> f = jax.random.normal(jax.random.key(0), (64, 16))
    >>> y = jnp.arange(64) % 4
    >>> loss_fn = lambda f: tj.transrate_loss(f / jnp.linalg.norm(f, axis=1, keepdims=True), y,
    ...                                       num_classes=4)
    >>> g = jax.jit(jax.grad(loss_fn))(f)
    >>> g.shape
    (64, 16)

  References: Huang et al., "Frustratingly easy transferability estimation", ICML 2022;
  Yu, Chan, You, Song and Ma, "Learning diverse and discriminative representations via the
  principle of maximal coding rate reduction", NeurIPS 2020.
  """
  if weighting not in kernel.WEIGHTINGS:
    raise ValueError(f"weighting must be one of {kernel.WEIGHTINGS}; got {weighting!r}.")
  if gradient not in GRADIENTS:
    raise ValueError(f"gradient must be one of {GRADIENTS}; got {gradient!r}.")
  if num_classes is None:
    raise ValueError("num_classes is required: pass it as a static Python int.")
  f = validation.check_features(features)
  y, num_classes = validation.check_labels(labels, f.shape[0], num_classes=num_classes)
  eps, _ = validation.check_eps(eps, dtype=f.dtype)
  if jnp.ndim(eps) != 0:
    raise ValueError(f"eps must be a scalar for transrate_loss; got shape {jnp.shape(eps)}.")
  return validation.check_finite_result(  # concrete inputs: never a silent NaN loss
      _transrate_loss_jit(f, y, eps, num_classes=num_classes, weighting=weighting,
                          gradient=gradient), metric="transrate_loss", features=f, eps=eps)
