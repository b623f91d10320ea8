"""A metric is differentiable on every backend or on none, as the registry declares.

Each registered metric is differentiated on the CPU's own branches and on the accelerator branches
(``backend.accelerator_branches``). A metric registered ``differentiable=True`` has a finite
gradient that matches a central finite difference (float64) on both; any other metric raises the
same ValueError on both.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transrate_jax as tj
from transrate_jax._src import backend


def _inputs(consumes):
  rng = np.random.default_rng(0)
  y = np.arange(90) % 3
  if consumes == "features":
    x = rng.normal(size=(90, 8)) + 1.5 * np.eye(8)[y]
  else:
    x = rng.dirichlet(np.ones(5), size=90) * 0.9 + 0.1 * np.eye(5)[y]
    x = x / x.sum(axis=1, keepdims=True)
  direction = rng.normal(size=x.shape)
  if consumes == "source_probs":  # stay on the simplex: rows of the step sum to 0
    direction -= direction.mean(axis=1, keepdims=True)
  return x, y, direction


_FLOAT_METRICS = [name for name in tj.registered_metrics()
                  if tj.get_metric(name).consumes != "source_labels"]


@pytest.mark.parametrize("branches", ["cpu", "accelerator"])
@pytest.mark.parametrize("name", _FLOAT_METRICS)
def test_gradient_exists_on_every_backend_or_on_none(name, branches):
  metric = tj.get_metric(name)
  x, y, direction = _inputs(metric.consumes)
  score = lambda x: metric.fn(x, y, num_classes=3)
  with backend.accelerator_branches(branches == "accelerator"):
    if not metric.differentiable:
      with pytest.raises(ValueError, match="not differentiable|no derivative"):
        jax.grad(score)(jnp.asarray(x))
      return
    grad = np.asarray(jax.grad(score)(jnp.asarray(x)))
    assert np.all(np.isfinite(grad))
    h = 1e-5
    numeric = (float(score(x + h * direction)) - float(score(x - h * direction))) / (2 * h)
    np.testing.assert_allclose(np.sum(grad * direction), numeric, rtol=1e-4, atol=1e-7)


def test_describe_metrics_reports_differentiability():
  described = {m["name"]: m["differentiable"] for m in tj.describe_metrics()}
  assert described["transrate"] is True
  assert described["logme"] is False
