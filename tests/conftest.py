"""Test configuration: float64 is enabled for the whole session.

Float32 behaviour is tested with explicit float32 inputs (the package keeps the input dtype).
"""

import os
import sys

import jax

jax.config.update("jax_enable_x64", True)

# Let tests import the oracles (tests/reference*.py) as plain modules.
sys.path.insert(0, os.path.dirname(__file__))
