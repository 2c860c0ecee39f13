"""One self-contained HTML page of a run's GX Data Docs, for MLflow's artifact viewer.

MLflow shows an HTML artifact alone, in a sandboxed frame: the static site's relative
stylesheets, images and links to its other pages do not load there, and its scripts and
styles come from CDNs a closed network cannot reach, so the logged site rendered empty.
This page holds every validation result of the site in one file: the pages' own markup
(GX renders its tables server-side) without scripts or external links, with the site's
stylesheet and a small table style inlined, and a table of contents.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

from recops.validation.contract import SELF_CONTAINED_DOCS

__all__ = ["self_contained_docs"]

_SCRIPT = re.compile(r"<script\b.*?</script\s*>", re.S | re.I)
_LINK = re.compile(r"<link\b[^>]*>", re.I)
_STYLE = re.compile(r"<style\b[^>]*>(.*?)</style\s*>", re.S | re.I)
_BODY = re.compile(r"<body\b[^>]*>(.*)</body\s*>", re.S | re.I)
_RELATIVE_IMG = re.compile(r"<img\b(?![^>]*\bsrc=[\"']?(?:data:|https?:))[^>]*>", re.I)
_RELATIVE_HREF = re.compile(r"\bhref=([\"'])(?!#|https?:|mailto:)[^\"']*\1", re.I)
_HANDLERS = re.compile(r"\son[a-z]+=(\"[^\"]*\"|'[^']*')", re.I)

_BASE_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 1.5rem;
       color: #212529; }
table { border-collapse: collapse; margin: .5rem 0; }
th, td { border: 1px solid #dee2e6; padding: .25rem .5rem; vertical-align: top; }
.card { border: 1px solid #dee2e6; border-radius: .25rem; margin: .75rem 0; padding: .5rem; }
nav.recops-toc { background: #f8f9fa; padding: .5rem 1rem; border-radius: .25rem; }
section.recops-page { border-top: 3px solid #343a40; margin-top: 2rem; padding-top: 1rem; }
.navbar, .ge-walkthrough-modal, .modal { display: none; }
"""


def _clean(markup: str) -> str:
    markup = _SCRIPT.sub("", markup)
    markup = _LINK.sub("", markup)
    markup = _RELATIVE_IMG.sub("", markup)
    markup = _HANDLERS.sub("", markup)
    return _RELATIVE_HREF.sub('href="#"', markup)


def self_contained_docs(docs_dir: Path) -> Path:
    """Write ``<docs_dir>/data_docs_inline.html`` from the site's validation pages.

    Args:
        docs_dir: A built GX Data Docs site (``index.html``, ``validations/``,
            ``static/``).

    Returns:
        The page's path. A site without validation pages gives a page that says so.
    """
    pages = sorted((docs_dir / "validations").rglob("*.html"))
    css = [_BASE_CSS]
    stylesheet = docs_dir / "static" / "styles" / "data_docs_default_styles.css"
    if stylesheet.is_file():
        css.append(stylesheet.read_text(errors="replace"))
    toc: list[str] = []
    sections: list[str] = []
    for i, page in enumerate(pages):
        text = page.read_text(errors="replace")
        css.extend(style for style in _STYLE.findall(text) if style not in css)
        body = _BODY.search(text)
        title = page.relative_to(docs_dir / "validations").parts[0]
        anchor = f"page-{i}"
        toc.append(f'<li><a href="#{anchor}">{html.escape(title)}</a></li>')
        sections.append(
            f'<section class="recops-page" id="{anchor}"><h2>{html.escape(title)}</h2>'
            f"{_clean(_STYLE.sub('', body.group(1) if body else text))}</section>"
        )
    if not sections:
        sections.append("<p>No validation results in this Data Docs site.</p>")
    # Styles come from the site itself; "</" would end the style element early.
    style = "\n".join(c.replace("</", "<\\/") for c in css)
    out = docs_dir / SELF_CONTAINED_DOCS
    out.write_text(
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        "<title>GX Data Docs</title>"
        f"<style>{style}</style></head><body>"
        "<h1>GX Data Docs: validation results</h1>"
        f'<nav class="recops-toc"><ol>{"".join(toc)}</ol></nav>'
        f"{''.join(sections)}</body></html>\n"
    )
    return out
