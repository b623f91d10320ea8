"""TransRate (Huang et al., ICML 2022) and the coding rate it is made of: the public functions.

    Z    = F - mean(F, axis=0)                               # global centring
    R(Z) = 1/2 logdet(I_d + Z^T Z / (n eps))                 # coding rate
    R_c  = 1/2 logdet(I_d + Z_c^T Z_c / (n_c eps))           # rows of class c, not re-centred
    TrR  = R(Z) - sum_c w_c R_c                              # w_c = n_c / n ("prior") or 1 / C ("uniform")

The layouts and the compiled program are in ``transrate/kernel.py``; the float32 policy they obey
is written up in docs/numerics.md.
"""

from __future__ import annotations

from typing import Optional

import jax

from transrate_jax._src import registry
from transrate_jax._src import validation
from transrate_jax._src.transrate import kernel


def coding_rate(features, *, eps=1e-4) -> jax.Array:
  r"""Coding rate of the rows of ``features`` (no centring).

  .. math:: R(F) = \tfrac12 \log\det\left(I_d + \frac{F^\top F}{n\,\epsilon}\right)

  computed as ``1/2 logdet(I_n + F F^T / (n eps))`` when ``n <= d`` (Sylvester's identity; the
  full-rank side, docs/numerics.md), by Cholesky.

  Args:
    features: [n, d] array (NumPy or JAX; half precision is upcast to float32).
    eps: distortion, a positive float, or a 1-D array of values to sweep (one eigendecomposition).

  Returns:
    A scalar (or [E] for a vector ``eps``) in nats.

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> float(tj.coding_rate(np.eye(4)[:2], eps=1.0))  # 1/2 * 2 * log(1 + 1/2)
    0.405...

  Reference: Ma et al., "Segmentation of multivariate mixed data via lossy data coding and
  compression", TPAMI 2007; Huang et al., "Frustratingly easy transferability estimation", ICML 2022.
  """
  f = validation.check_features(features, min_samples=1)
  eps, eps_vector = validation.check_eps(eps, dtype=f.dtype)
  return kernel.coding_rate_jit(f, eps, eps_vector=eps_vector)


def transrate(features, labels, *, eps=1e-4, weighting: Optional[str] = None,
              preset: Optional[str] = None, num_classes: Optional[int] = None) -> jax.Array:
  r"""TransRate: how much information the features carry about the labels (higher is better).

  .. math::
     Z &= F - \bar F, \qquad R(Z) = \tfrac12\log\det\left(I + \tfrac{Z^\top Z}{n\epsilon}\right),\\
     \mathrm{TrR} &= R(Z) - \sum_c w_c\, \tfrac12\log\det\left(I + \tfrac{Z_c^\top Z_c}{n_c\epsilon}\right)

  with ``Z_c`` the rows of class ``c`` (not re-centred). Scores are in nats and only comparable
  within one target task (same labels); the scale of the features matters unless rows are
  normalised (``preset="official"`` does).

  Args:
    features: [n, d] float array (NumPy or JAX; half precision is upcast to float32).
    labels: [n] integer class labels in ``0..C-1``.
    eps: distortion ``eps > 0`` (default 1e-4), or a 1-D array of values: one score per value, all
      from one eigendecomposition per term (to sweep eps as the authors did, 1e-5 to 2e-2).
    weighting: "prior" (default; ``w_c = n_c / n``, the paper's mutual-information estimate and the
      authors' code) or "uniform" (``w_c = 1 / C``, the paper's listing and tllib).
    preset: None, "tllib" (uniform weights, raw features: what ``tllib.ranking.transrate`` returns)
      or "official" (the authors' repository: rows L2-normalised, centred, normalised again, prior
      weights, result divided by the numerical rank of ``Z^T Z / n``). A preset fixes the weighting;
      a conflicting ``weighting`` raises.
    num_classes: C as a static Python int. Default ``max(labels) + 1``, read from the labels;
      required when the labels are traced (inside ``jit``/``vmap``/``grad``). Classes with no sample
      contribute zero (but count in C for "uniform").

  Returns:
    A scalar (or [E] for a vector ``eps``) in the features' float dtype. (An eager call on the
    CPU forms its products with BLAS ``syrk`` and factorises them with LAPACK ``potrf`` on the
    host, and compiles only the assembly; same numbers to round-off. Under
    ``jit``/``vmap``/``grad``, on accelerators, for a vector ``eps`` and the official preset
    everything is compiled. docs/numerics.md, "Products on the
    host".)

  Raises:
    ValueError: features not 2-D or with NaN/inf, fewer than 2 samples, labels not 1-D integers,
      a length mismatch, labels < 0 or >= num_classes, eps <= 0, an unknown weighting or preset.

  Example:
    >>> import numpy as np, transrate_jax as tj
    >>> rng = np.random.default_rng(0)
    >>> y = rng.integers(0, 3, 300)
    >>> f = rng.normal(size=(300, 16)) + 3.0 * np.eye(16)[y]
    >>> float(tj.transrate(f, y)) > float(tj.transrate(rng.normal(size=(300, 16)), y))
    True

  Reference: Huang, Huang, Xu, Ma, Shen, Lu and Zhou, "Frustratingly easy transferability
  estimation", ICML 2022.
  """
  return kernel.score(features, labels, eps=eps, weighting=weighting, preset=preset,
                      num_classes=num_classes)


registry.register_metric(
    "transrate", transrate, differentiable=True, consumes="features", vmappable=True,
    zero_pad_exact=True,
    batched=kernel.batched,
    description="TransRate: mutual information of features and labels by coding rates, "
                "R(Z) - R(Z|Y) (Huang et al., ICML 2022)")
