"""Gaussian Bhattacharyya Coefficient (GBC).

Pandy, Ghiasi, Pourmahmood-Aghababa and Kokkinos, "Transferability Estimation using Bhattacharyya
Class Separability", CVPR 2022. Reference code: google-research ``stable_transfer/transferability/
gbc.py`` (``get_gbc_score``), with the features first reduced by ``PCA(n_components=64)``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from transrate_jax._src import numerics
from transrate_jax._src import peer_numerics
from transrate_jax._src import registry
from transrate_jax._src import validation

HIGHEST = numerics.HIGHEST

# stable_transfer floors every per-class variance at this value (constant features).
_VARIANCE_FLOOR = 1e-4


@functools.partial(jax.jit, static_argnames=("num_classes", "gaussian", "pca_dim"))
def _gbc_kernel(x, y, *, num_classes, gaussian, pca_dim):
  n, d = x.shape
  # Offset invariant: centre with a shift first (class means of raw float32 features with a
  # large offset carry |offset| * 2^-24 of error each).
  x = peer_numerics.pca_project(x, min(pca_dim, n)) if d > pca_dim else numerics.center(x)
  onehot = jax.nn.one_hot(y, num_classes, dtype=x.dtype)  # [n, C]
  counts = jnp.sum(onehot, axis=0)
  safe = jnp.maximum(counts, 1.0)[:, None]
  means = jnp.matmul(onehot.T, x, precision=HIGHEST) / safe  # [C, p]
  resid = x - jnp.matmul(onehot, means, precision=HIGHEST)
  var = jnp.matmul(onehot.T, resid * resid, precision=HIGHEST) / safe  # population variance
  var = jnp.maximum(var, _VARIANCE_FLOOR)
  if gaussian == "spherical":
    var = jnp.mean(var, axis=1, keepdims=True)  # [C, 1]: one variance per class
  avg = 0.5 * (var[:, None, :] + var[None, :, :])  # [C, C, p or 1]
  diff = means[:, None, :] - means[None, :, :]
  first = jnp.sum(diff * diff / avg, axis=-1) / 8.0
  logvar = jnp.sum(jnp.log(var), axis=-1)
  second = jnp.sum(jnp.log(avg), axis=-1) - 0.5 * logvar[:, None] - 0.5 * logvar[None, :]
  distance = first + 0.5 * second
  present = counts > 0
  mask = present[:, None] & present[None, :] & ~jnp.eye(num_classes, dtype=bool)
  return -jnp.sum(jnp.where(mask, jnp.exp(-distance), 0.0))


def gbc(features, labels, *, gaussian: str = "spherical", pca_dim: int = 64,
        num_classes: int | None = None) -> jax.Array:
  """Gaussian Bhattacharyya Coefficient (GBC) of features for a labelled target task.

  Higher is better (less overlap between classes). Each class is modelled by a Gaussian with
  its mean and a diagonal covariance (per-dimension population variance, floored at 1e-4) or a
  spherical one (the mean of those variances); then ::

      D_B(c, c') = 1/8 sum_j (mu_cj - mu_c'j)^2 / s_j
                   + 1/2 [sum_j log s_j - 1/2 sum_j log s_cj - 1/2 sum_j log s_c'j],
      s = (s_c + s_c') / 2,
      GBC = -sum_{c != c'} exp(-D_B(c, c')),

  over the classes present in ``labels``. As in the reference code, the spherical variance is
  one scalar per class, so its log-determinant term is counted once, not ``p`` times.
  When ``d > pca_dim`` the features are first reduced to their first ``pca_dim`` exact principal
  components (the reference uses ``sklearn.decomposition.PCA(64)``).

  Numerics: GBC is invariant to a common offset of the features (centred with a shift, also in
  float32), not to rescaling (the variance floor 1e-4 is absolute: tiny features look like
  overlapping classes).

  Args:
    features: [n, d] float features of the target data from the pre-trained model.
    labels: [n] int class indices in ``0..C-1``.
    gaussian: ``"spherical"`` (default, as in the paper) or ``"diagonal"``.
    pca_dim: number of principal components kept when ``d > pca_dim`` (static).
    num_classes: static ``C``; needed under ``jit``/``vmap``, else ``max(labels) + 1``.

  Returns:
    Scalar GBC (<= 0), in the features' float dtype.

  Raises:
    ValueError: fewer than two classes present (no class pair: the sum would be an empty 0,
      the best possible score), an unknown ``gaussian``, ``pca_dim`` not a positive int, the
      input errors of :func:`transrate_jax.transrate`; for concrete inputs, a score that is not
      finite (in float32, features whose scale overflows the squared deviations, ``n max|f|^2``
      beyond 3.4e38, e.g. ``|f| ~ 1e18``: GBC is not scale invariant, so pass float64 features
      or features of a smaller scale). Not checked for traced inputs.

  Example:
    >>> score = gbc(features, labels)  # doctest: +SKIP

  Reference: Pandy et al., "Transferability Estimation using Bhattacharyya Class Separability",
  CVPR 2022.
  """
  if gaussian not in ("spherical", "diagonal"):
    raise ValueError(f"gaussian must be 'spherical' or 'diagonal'; got {gaussian!r}.")
  validation.check_positive_int(pca_dim, "pca_dim")
  x = validation.check_features(features)
  y, c = validation.check_labels(labels, x.shape[0], num_classes=num_classes)
  validation.check_class_structure(labels, c, metric="GBC")
  return validation.check_finite_result(
      _gbc_kernel(x, y, num_classes=c, gaussian=gaussian, pca_dim=int(pca_dim)), metric="GBC",
      features=x)


registry.register_metric(
    "gbc", gbc, differentiable=True, vmappable=True,
    description="GBC: minus the Bhattacharyya overlap of per-class Gaussians on PCA features "
                "(Pandy et al., CVPR 2022)")
