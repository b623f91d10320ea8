"""Pretrained backbones ported to Flax NNX (see :mod:`transrate_jax.models`)."""
