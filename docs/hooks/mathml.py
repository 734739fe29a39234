"""MkDocs hook: render the pages' LaTeX as MathML at build time.

`pymdownx.arithmatex` (generic mode) finds the math in a page, `$...$` inline and `$$...$$`
as a block, outside code, and wraps its LaTeX in `<span class="arithmatex">\\(...\\)</span>`
or `<div class="arithmatex">\\[...\\]</div>`. This hook replaces each wrapper with MathML
from `latex2mathml`, which every current browser renders natively: the site needs no
JavaScript or CDN to show an equation, and a formula latex2mathml cannot parse fails the
(strict) build with the page's name instead of reaching a reader as raw LaTeX.
"""

import html
import re

from latex2mathml import converter

_WRAPPED = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*\\(?P<open>[(\[])(?P<tex>.*?)\\[)\]]\s*</(?P=tag)>',
    re.DOTALL)
_UNKNOWN_COMMAND = re.compile(r">(\\[A-Za-z]+)<")


def _to_mathml(match, page):
  tex = html.unescape(match.group("tex")).strip()
  display = "block" if match.group("open") == "[" else "inline"
  try:
    mathml = converter.convert(tex, display=display)
  except Exception as error:  # latex2mathml raises its own exception types
    raise ValueError(
        f"{page.file.src_path}: cannot render the formula {tex!r} as MathML: {error}"
    ) from error
  # latex2mathml passes a command it does not know through as text (`<mi>\foo</mi>`).
  unknown = _UNKNOWN_COMMAND.search(mathml)
  if unknown:
    raise ValueError(f"{page.file.src_path}: the formula {tex!r} uses {unknown.group(1)}, "
                     "which latex2mathml does not know")
  return mathml


def on_page_content(content, page, **kwargs):
  del kwargs
  return _WRAPPED.sub(lambda match: _to_mathml(match, page), content)
