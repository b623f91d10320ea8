"""Mini-batch training of an NNX classifier as one ``lax.scan``, shared by the zoo and fine-tuning.

:func:`transrate_jax._src.zoo.train` pretrains the zoo models with it and
:mod:`transrate_jax._src.finetune` trains the transferred models with it (the fine-tuning ground
truth). It lives in its own module so that neither of the two has to import the other for it:
``finetune`` imports ``zoo`` (configurations, ``build``), and ``zoo`` imports this module only
inside ``train`` (importing ``transrate_jax.zoo`` does not import Flax).
"""

from __future__ import annotations

import jax
import optax
from flax import nnx

__all__ = ("scan_train",)


def scan_train(params, rest, opt_state, idx, x_tr, y_tr, *, graphdef, tx):
  """Mini-batch training as one ``lax.scan``: softmax cross-entropy, ``tx`` updates.

  Args:
    params, rest: the model's ``nnx.Param`` state and the rest (``nnx.split``).
    opt_state: ``tx.init(params)``.
    idx: [steps, batch] int row indices of each mini-batch.
    x_tr, y_tr: [n, ...] training inputs and [n] int labels.
    graphdef: the model's graph definition (static).
    tx: the optax transformation (static).

  Returns:
    ``(params, rest, losses [steps])`` after the last step. Used by the zoo's training and by
    the fine-tuning ground truth, traced inside their own ``jit``.
  """

  def step(carry, ib):
    params, rest, opt_state = carry

    def loss_fn(params):
      m = nnx.merge(graphdef, params, rest, copy=True)
      logits = m(x_tr[ib])
      loss = optax.softmax_cross_entropy_with_integer_labels(logits, y_tr[ib]).mean()
      return loss, nnx.state(m, nnx.Not(nnx.Param))

    (loss, rest), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return (optax.apply_updates(params, updates), rest, opt_state), loss

  (params, rest, _), losses = jax.lax.scan(step, (params, rest, opt_state), idx)
  return params, rest, losses
