"""Turn judged experiments into one self-contained HTML page and a results.json."""

from .html import render

__all__ = ["render"]
