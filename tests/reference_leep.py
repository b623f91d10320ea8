"""Float64 NumPy oracles for LEEP, NCE and N-LEEP.

Each oracle follows the published formula step by step (explicit loops; N-LEEP with scikit-learn's
exact PCA and GaussianMixture), independently of the JAX code. Their test inputs are ``make_probs``,
``make_hard`` and ``feature_case`` in ``tests/cases_peers.py``.
"""

from __future__ import annotations

import numpy as np

from reference_pca import pca_full


def leep(theta, labels):
  """LEEP from the definition, float64."""
  theta = np.asarray(theta, np.float64)
  n, cs = theta.shape
  c = int(labels.max()) + 1
  joint = np.zeros((c, cs))
  for i in range(n):
    joint[labels[i]] += theta[i] / n
  pz = joint.sum(axis=0, keepdims=True)
  cond = np.divide(joint, pz, out=np.zeros_like(joint), where=pz > 0)  # P(y | z); unused if P(z)=0
  return float(np.mean([np.log(np.dot(theta[i], cond[labels[i]])) for i in range(n)]))


def nce(source, labels):
  """NCE = sum P(y, z) log P(y | z), float64, 0 log 0 = 0."""
  n = len(labels)
  joint = {}
  for z, y in zip(source, labels):
    joint[(int(y), int(z))] = joint.get((int(y), int(z)), 0.0) + 1.0 / n
  pz = {}
  for (y, z), p in joint.items():
    pz[z] = pz.get(z, 0.0) + p
  return float(sum(p * np.log(p / pz[z]) for (y, z), p in joint.items()))


def gmm_params_from_resp(x, resp, reg_covar=1e-6):
  """Weights, means, precisions of a full-covariance mixture from responsibilities (M-step)."""
  nk = resp.sum(axis=0) + 10 * np.finfo(np.float64).eps
  means = resp.T @ x / nk[:, None]
  precisions = []
  for k in range(resp.shape[1]):
    diff = x - means[k]
    cov = (resp[:, k, None] * diff).T @ diff / nk[k] + reg_covar * np.eye(x.shape[1])
    precisions.append(np.linalg.inv(cov))
  return nk / nk.sum(), means, np.stack(precisions)


def sklearn_gmm(x, resp0, *, max_iter=100, tol=1e-3, reg_covar=1e-6):
  """scikit-learn's GaussianMixture started from the parameters that ``resp0`` gives."""
  from sklearn.mixture import GaussianMixture
  w, m, p = gmm_params_from_resp(x, resp0, reg_covar)
  gmm = GaussianMixture(n_components=resp0.shape[1], covariance_type="full", tol=tol,
                        reg_covar=reg_covar, max_iter=max_iter, weights_init=w, means_init=m,
                        precisions_init=p, random_state=0)
  gmm.fit(x)
  return gmm


def nleep(x, labels, resp0, *, variance=0.8, max_iter=100, tol=1e-3, reg_covar=1e-6):
  """N-LEEP with scikit-learn's PCA(variance) and GaussianMixture started from ``resp0``."""
  xp = pca_full(x, variance)
  gmm = sklearn_gmm(xp, resp0, max_iter=max_iter, tol=tol, reg_covar=reg_covar)
  return leep(gmm.predict_proba(xp), labels)
