"""MkDocs hook: the reST roles of normlab's docstrings (``:class:`Norm```) read as plain code on the site.

mkdocstrings renders the docstrings as Markdown, where a role's prefix would stay as literal text
(":class:" before the name); the docstrings keep the roles for Sphinx and IDEs.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:class|func|meth|mod|attr|data|obj|exc|const|math):(?=<code>)")


def on_page_content(html: str, **kwargs) -> str:
    return _ROLE.sub("", html)
