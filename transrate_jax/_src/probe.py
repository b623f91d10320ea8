"""Ground truth for transferability: a linear probe trained on frozen features.

The cheap ground truth of the field (a linear classifier on a layer's features; fine-tuning the
whole model is the expensive one): multinomial logistic regression on standardised features,
full-batch Adam with an L2 penalty, a fixed number of steps, compiled once per shape.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax

from transrate_jax._src import numerics
from transrate_jax._src import validation


@functools.partial(jax.jit, static_argnames=("num_classes", "steps"))
def _fit_predict(x_train, y_train, x_test, *, num_classes, steps, learning_rate, l2):
  # Standardise with the training statistics, centred with a shift (first-pass mean, then the
  # mean of the residual) so that a large common offset does not cancel in float32.
  shift = jnp.mean(x_train, axis=0)
  resid = x_train - shift
  mean = jnp.mean(resid, axis=0)
  std = jnp.std(resid, axis=0) + 1e-6
  x_train = (resid - mean) / std
  x_test = ((x_test - shift) - mean) / std
  d = x_train.shape[1]
  params = (jnp.zeros((d, num_classes), x_train.dtype), jnp.zeros((num_classes,), x_train.dtype))
  tx = optax.adam(learning_rate)

  def loss(p):
    logits = jnp.dot(x_train, p[0], precision=numerics.HIGHEST) + p[1]
    ce = optax.softmax_cross_entropy_with_integer_labels(logits, y_train).mean()
    return ce + l2 * jnp.sum(p[0] ** 2)

  def step(carry, _):
    p, state = carry
    grads = jax.grad(loss)(p)
    updates, state = tx.update(grads, state, p)
    return (optax.apply_updates(p, updates), state), None

  (params, _), _ = jax.lax.scan(step, (params, tx.init(params)), None, length=steps)
  logits = jnp.dot(x_test, params[0], precision=numerics.HIGHEST) + params[1]
  return jnp.argmax(logits, axis=-1)


def linear_probe_accuracy(train_features, train_labels, test_features, test_labels, *,
                          num_classes: int | None = None, steps: int = 500,
                          learning_rate: float = 1e-2, l2: float = 1e-3) -> float:
  """Test accuracy of a linear classifier trained on frozen features (higher is better).

  Multinomial logistic regression on features standardised with the training statistics,
  ``steps`` full-batch Adam steps on cross-entropy ``+ l2 * |W|^2``.

  Args:
    train_features: [n, d] features of the training split.
    train_labels: [n] integer labels.
    test_features: [m, d] features of the test split.
    test_labels: [m] integer labels.
    num_classes: C (default: the larger max label + 1 of both splits).
    steps: optimisation steps (keyword-only positive int).
    learning_rate: Adam's step size (finite, > 0).
    l2: weight decay coefficient (finite, >= 0).

  Returns:
    Accuracy on the test split, a Python float in [0, 1].

  Raises:
    ValueError: features not 2-D, non-numeric or with NaN/inf, train and test features of
      different widths; labels that are not 1-D integer class indices (strings, ``None``,
      floats) of the features' length, or negative or >= ``num_classes``; ``num_classes`` or
      ``steps`` not a positive int; ``learning_rate`` not a finite number > 0; ``l2`` not a
      finite number >= 0 (0: no weight decay).
  """
  steps = validation.check_positive_int(steps, "steps")
  learning_rate = validation.check_real_scalar(learning_rate, "learning_rate")
  l2 = validation.check_real_scalar(l2, "l2", inclusive=True)
  num_classes = validation.check_num_classes(num_classes)
  x_tr = validation.check_features(train_features, name="train_features")
  x_te = validation.check_features(test_features, name="test_features", min_samples=1)
  if x_tr.shape[1] != x_te.shape[1]:
    raise ValueError(f"train_features have {x_tr.shape[1]} columns but test_features "
                     f"{x_te.shape[1]}.")
  # Labels are checked before their classes are counted (strings or None fail here, by name).
  y_te, c_te = validation.check_labels(test_labels, x_te.shape[0], name="test_labels", host=True)
  _, c_tr = validation.check_labels(train_labels, x_tr.shape[0], name="train_labels", host=True)
  if num_classes is None:
    num_classes = max(c_tr, c_te)
  y_tr, _ = validation.check_labels(train_labels, x_tr.shape[0], num_classes=num_classes,
                                    name="train_labels")
  validation.check_labels(y_te, x_te.shape[0], num_classes=num_classes, name="test_labels")
  dtype = jnp.promote_types(x_tr.dtype, x_te.dtype)
  pred = _fit_predict(x_tr.astype(dtype), y_tr, x_te.astype(dtype), num_classes=num_classes,
                      steps=steps, learning_rate=learning_rate, l2=l2)
  return float(np.mean(np.asarray(pred) == y_te))
