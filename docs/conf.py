"""Sphinx configuration of the transrate_jax documentation (Sphinx + MyST, furo theme).

Build (the command the README names; warnings are errors, as in the tests):

  python -m sphinx -W --keep-going -b html docs docs/_build/html

Nothing is fetched at build or view time: no intersphinx, math rendered as MathML
(``_ext/mathml.py``), notebooks rendered from their stored (output-free) cells without execution.
"""

import os
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(_HERE, "_ext"))
sys.path.insert(0, os.path.dirname(_HERE))  # the working tree's package, even over an install

import transrate_jax  # pylint: disable=wrong-import-position


def _sync_notebooks():
  """The notebooks live in colab/; the site renders copies in docs/notebooks/ (not committed).

  Copied rather than linked so that their links to each other resolve inside the site; a copy
  is rewritten only when its notebook changed, so incremental builds stay incremental.
  """
  src = os.path.join(os.path.dirname(_HERE), "colab")
  dst = os.path.join(_HERE, "notebooks")
  os.makedirs(dst, exist_ok=True)
  for name in sorted(os.listdir(src)):
    if not name.endswith(".ipynb"):
      continue
    with open(os.path.join(src, name), "rb") as f:
      data = f.read()
    target = os.path.join(dst, name)
    if os.path.exists(target):
      with open(target, "rb") as f:
        if f.read() == data:
          continue
    with open(target, "wb") as f:
      f.write(data)


_sync_notebooks()

project = "transrate_jax"
author = "transrate_jax contributors"
copyright = "transrate_jax contributors"  # pylint: disable=redefined-builtin
release = transrate_jax.__version__
version = release

extensions = [
    "myst_nb",
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "mathml",
    "api_coverage",
]

# The public API: every name of each module's __all__ must have an entry (api_coverage).
PUBLIC_MODULES = (
    "transrate_jax",
    "transrate_jax.capture",
    "transrate_jax.datasets",
    "transrate_jax.models",
    "transrate_jax.zoo",
)
api_public_modules = PUBLIC_MODULES

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb", ".ipynb": "myst-nb"}
root_doc = "index"
exclude_patterns = ["_build", "_ext", "_templates", "**.ipynb_checkpoints"]
templates_path = ["_templates"]

# MyST and notebooks: rendered as stored (CI executes them in tests/test_notebooks.py).
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"

# API reference from the docstrings (Google style).
autosummary_generate = True
autosummary_imported_members = True
autodoc_typehints = "signature"
autodoc_member_order = "bysource"
autodoc_preserve_defaults = True
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_use_ivar = True  # "Attributes:" as a field list: the fields are documented as members


def _skip_namedtuple_aliases(app, what, name, obj, skip, options):  # pylint: disable=unused-argument
  """NamedTuple fields say "Alias for field number k": their class's Attributes say more."""
  doc = getattr(obj, "__doc__", None) or ""
  return True if doc.startswith("Alias for field number") else skip


def setup(app):
  app.connect("autodoc-skip-member", _skip_namedtuple_aliases)

# Offline math (see _ext/mathml.py).
html_math_renderer = "mathml"

html_theme = "furo"
html_title = f"transrate_jax {release}"
html_static_path = ["_static"]
html_css_files = ["custom.css"]
html_show_sourcelink = False
html_copy_source = False
pygments_style = "sphinx"
highlight_language = "text"  # unlabelled blocks are program output, not code
