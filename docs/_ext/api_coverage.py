"""A build warning (an error under ``-W``) for every public name without an API entry.

The public names are ``__all__`` of ``transrate_jax`` and of its public submodules
(``conf.PUBLIC_MODULES``); an entry is an object of the Python domain documented under
``<module>.<name>`` (what the autosummary tables of ``docs/api/`` generate).
"""

import importlib

from sphinx.util import logging

_LOGGER = logging.getLogger(__name__)


def public_names(modules):
  """Every public name, as ``module.name``, in the order of each module's ``__all__``."""
  names = []
  for module in modules:
    names += [f"{module}.{name}" for name in importlib.import_module(module).__all__]
  return names


def _check(app, env):
  documented = set(env.domains["py"].objects)
  for name in public_names(app.config.api_public_modules):
    if name not in documented:
      _LOGGER.warning("public name %s has no entry in the API reference (docs/api/)", name,
                      type="api_coverage")


def setup(app):
  app.add_config_value("api_public_modules", (), "env")
  app.connect("env-check-consistency", _check)
  return {"parallel_read_safe": True, "parallel_write_safe": True}
