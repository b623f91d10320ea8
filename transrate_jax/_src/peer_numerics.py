"""Scale normalisation shared by the peer metrics (LogME, H-scores, LFC, SFDA, GBC, PARC).

Many transferability scores are invariant to rescaling the features, ``score(s F) = score(F)``,
but their float32 evaluation is not: products such as ``F^T F`` overflow (|F| ~ 1e19) or
underflow (|F| ~ 1e-19) long before the inputs do, and fourth powers (Ledoit-Wolf) twice as
early. Dividing by a *power of two* near ``max |F|`` first changes no bit of the mantissas (the
division is exact), so the normalised computation is the same computation on data of unit size.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from transrate_jax._src import numerics


def pow2_above(m: jax.Array) -> jax.Array:
  """``2^e`` with ``2^(e-1) <= m < 2^e`` for a scalar ``m > 0`` (2 when ``m == 0``)."""
  _, e = jnp.frexp(jnp.where(m > 0, m, jnp.ones((), m.dtype)))
  return jnp.ldexp(jnp.ones((), m.dtype), e)


def pow2_scale(x: jax.Array) -> jax.Array:
  """``2^e`` with ``2^(e-1) <= max |x| < 2^e`` (2 when ``x`` is all zero); a scalar of ``x``'s dtype.

  Dividing by it is exact in binary floating point (no mantissa changes) and leaves
  ``max |x / s|`` in ``[1/2, 1)``.
  """
  return pow2_above(jnp.max(jnp.abs(x)))


def normalise(x: jax.Array):
  """``(x / s, s)`` with ``s = pow2_scale(x)``: ``x`` brought to unit size, exactly."""
  s = pow2_scale(x)
  return x / s, s


@jax.jit
def _is_constant(x):
  return jnp.all(x == x[:1])


def is_constant(x) -> bool:
  """Whether every row of the concrete ``[n, d]`` array ``x`` equals the first (all features
  constant over the samples)."""
  if isinstance(x, np.ndarray):
    return bool(np.all(x == x[:1]))
  return bool(_is_constant(x))


def centre(x: jax.Array) -> jax.Array:
  """``x - mean(x, axis=0)`` with a shift (:func:`numerics.center`), constant columns exactly 0.

  A column whose centred values are all below ``eps / 16`` of its largest magnitude is constant
  to the resolution of the dtype (two distinct floats near ``v`` differ by at least
  ``eps |v| / 2``, so a non-constant column keeps at least ``eps / 4`` of its magnitude): its
  residual is the round-off of the mean and is set to 0, so that a later normalisation does not
  blow round-off up to unit size.

  Args:
    x: [n, d] float.

  Returns:
    [n, d], centred.
  """
  z = numerics.center(x, axis=0)
  tiny = jnp.finfo(x.dtype).eps / 16 * jnp.max(jnp.abs(x), axis=0)
  return jnp.where(jnp.max(jnp.abs(z), axis=0) <= tiny, 0.0, z).astype(x.dtype)
