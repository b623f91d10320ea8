"""Math as MathML, rendered by the browser: no JavaScript, nothing fetched from the network.

Sphinx's default HTML math renderer (MathJax) loads its script from a CDN, which an offline
machine cannot reach. This renderer converts each formula at build time with docutils' LaTeX to
MathML converter (MathML Core is rendered natively by Chromium, Firefox and Safari). A formula the
converter cannot read is a build warning (an error under ``-W``) and is shown as its LaTeX source.
"""

import html
import re

from docutils import nodes
from docutils.utils.math import latex2mathml
from sphinx.util import logging

_LOGGER = logging.getLogger(__name__)

# TeX's shorthand \tfrac12 (one-token arguments without braces), which docutils does not read.
_FRAC_SHORTHAND = re.compile(r"\\([dt]?frac)(?![A-Za-z])\s*([0-9A-Za-z])\s*([0-9A-Za-z])")
# Manual delimiter sizes (\big( ... \Bigr]) and style switches inside a group, which docutils does
# not read either: the delimiters keep their natural size, the style its context's.
_SIZES = re.compile(
    r"\\(?:big|Big|bigg|Bigg)[lmr]?(?![A-Za-z])|\\(?:textstyle|displaystyle)(?![A-Za-z])")
# Two operator names in a row (\log\det): TeX sets a thin space between them; MathML does not.
_OPERATORS = r"\\(?:log|det|exp|ln|tr|max|min)(?![A-Za-z])"
_OPERATOR_PAIR = re.compile(f"({_OPERATORS})(?={_OPERATORS})")


def _normalise(latex: str) -> str:
  latex = _FRAC_SHORTHAND.sub(r"\\\1{\2}{\3}", latex.strip())
  latex = _OPERATOR_PAIR.sub(r"\1\\,", latex)
  return _SIZES.sub("", latex)


def _convert(node, latex: str, block: bool) -> str:
  try:
    return latex2mathml.tex2mathml(_normalise(latex), as_block=block)
  except Exception as e:  # pylint: disable=broad-except
    _LOGGER.warning("math not converted to MathML (%s): %s", e, latex, location=node)
    tag = "pre" if block else "code"
    return f"<{tag} class=\"math\">{html.escape(latex)}</{tag}>"


def _visit_inline(self, node):
  self.body.append(self.starttag(node, "span", "", CLASS="math notranslate"))
  self.body.append(_convert(node, node.astext(), block=False))
  self.body.append("</span>")
  raise nodes.SkipNode


def _visit_block(self, node):
  self.body.append(self.starttag(node, "div", CLASS="math notranslate"))
  # Sphinx's convention: paragraphs of a math block are separate equations.
  for part in (p for p in node.astext().split("\n\n") if p.strip()):
    self.body.append(_convert(node, part, block=True))
  self.body.append("</div>\n")
  raise nodes.SkipNode


def setup(app):
  app.add_html_math_renderer("mathml", (_visit_inline, None), (_visit_block, None))
  return {"parallel_read_safe": True, "parallel_write_safe": True}
