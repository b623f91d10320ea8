"""The level of LLVM code generation the test processes compile at.

The suite compiles about 5,500 distinct small XLA programs and spends most of its CPU time
compiling them. ``tests/conftest.py`` calls :func:`apply` before JAX starts its CPU backend, so
every test process, and every child it starts, generates machine code unoptimised
(``--xla_backend_optimization_level=0``): XLA's HLO passes are unchanged, the machine code differs
at round-off, compilation takes about a third less. JAX's default level is 3; run the suite there
with ``XLA_FLAGS=--xla_backend_optimization_level=3``. ``tests/test_codegen_level.py`` checks
every metric at the default level against the suite's level on every run, and the stress run of
``tests/test_no_hangs.py`` (repeated calls, not compilations) runs at the default level.
"""

import os

FLAG = "--xla_backend_optimization_level"
TEST_LEVEL = 0


def apply() -> None:
  """Adds the suite's level to ``XLA_FLAGS`` unless the environment sets a level already."""
  flags = os.environ.get("XLA_FLAGS", "")
  if FLAG not in flags:
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={TEST_LEVEL}".strip()


def default_level_env() -> dict:
  """This process's environment for a child that compiles at JAX's default level."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = " ".join(f for f in env.get("XLA_FLAGS", "").split()
                              if not f.startswith(FLAG))
  return env
