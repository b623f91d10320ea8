"""Private implementation modules of transrate_jax. Import from ``transrate_jax`` instead."""
