"""HTML building blocks of the report page: escaping, numbers, tables, badges, CSS.

Every text that came from a run (tag values, reasons, names) goes through ``esc``; a cell
of type ``Raw`` is markup built here from escaped parts and is not escaped again. The
page has no external assets: the CSS is inline and images are PNG data URIs.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence
from typing import Any

__all__ = [
    "CSS",
    "PNG_MAGIC",
    "Raw",
    "badge",
    "bullets",
    "esc",
    "facts_table",
    "fmt_kb",
    "fmt_num",
    "html_table",
    "img",
    "kpi",
    "link",
    "links",
    "note",
    "section",
]

#: The first bytes of every PNG: only real PNGs become data URIs.
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


class Raw(str):
    """Markup built here from escaped parts; table cells of this type are not re-escaped."""


def esc(value: Any) -> str:
    """HTML-escape ``value`` (quotes too); None becomes the empty string."""
    return html.escape("" if value is None else str(value), quote=True)


def fmt_num(value: Any, digits: int = 4) -> str:
    """A number for people: thousands separators, ``digits`` decimals, "–" for None."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    if number != number:
        return "NaN"
    if number.is_integer() and abs(number) >= 1:  # counts logged as floats (row_count 199.0)
        return f"{int(number):,}"
    return f"{number:.{digits}f}"


def fmt_kb(value: Any) -> str:
    """Bytes as kilobytes with one decimal; "–" when unknown or zero."""
    return "–" if value in (None, 0) else f"{float(value) / 1024:,.1f}"


def html_table(headers: Sequence[str], rows: Iterable[Sequence[Any]], cls: str = "") -> str:
    """A table with a header row; cells are escaped unless they are ``Raw``."""
    head = "".join(f"<th>{esc(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{c if isinstance(c, Raw) else esc(c)}</td>" for c in row) + "</tr>"
        for row in rows
    )
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def facts_table(rows: Iterable[tuple[str, Any]], caption: str = "", cls: str = "") -> str:
    """A two-column key/value table (keys as row headers)."""
    cap = f"<caption>{esc(caption)}</caption>" if caption else ""
    body = "".join(
        f'<tr><th scope="row">{esc(k)}</th><td>{v if isinstance(v, Raw) else esc(v)}</td></tr>'
        for k, v in rows
    )
    return f'<table class="facts {esc(cls)}">{cap}<tbody>{body}</tbody></table>'


def badge(ok: bool | None, yes: str, no: str, unknown: str = "unknown") -> Raw:
    """A green (``yes``), red (``no``) or grey (``unknown``) label."""
    if ok is None:
        return Raw(f'<span class="badge grey">{esc(unknown)}</span>')
    return Raw(f'<span class="badge {"green" if ok else "red"}">{esc(yes if ok else no)}</span>')


def img(png: bytes, alt: str) -> str:
    """An inline PNG as a data URI, or a note when the bytes are not a PNG."""
    if not png.startswith(PNG_MAGIC):  # only real PNGs become data URIs
        return f'<p class="note">{esc(alt)}: the artifact is not a PNG, not shown.</p>'
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{esc(alt)}" src="data:image/png;base64,{data}">'


def link(url: str, text: Any) -> Raw:
    """An anchor to another UI, opened in a new tab (the page shows inside Airflow's
    iframe); only http(s) URLs become links, anything else stays text."""
    if not str(url).startswith(("http://", "https://")):
        return Raw(esc(text))
    return Raw(f'<a href="{esc(url)}" target="_blank" rel="noopener noreferrer">{esc(text)}</a>')


def links(items: Iterable[tuple[str, Any]], sep: str = " · ") -> Raw:
    """``(url, text)`` pairs as links in one line."""
    return Raw(sep.join(link(url, text) for url, text in items))


def bullets(items: Iterable[Any], cls: str = "") -> str:
    """An escaped bullet list; empty when there are no items."""
    rendered = "".join(f"<li>{esc(i)}</li>" for i in items)
    return f'<ul class="{esc(cls)}">{rendered}</ul>' if rendered else ""


def note(text: str) -> str:
    """A muted paragraph (what a section says when it has no data)."""
    return f'<p class="note">{esc(text)}</p>'


def section(key: str, title: str, body: str) -> str:
    """One page section with its anchor id and heading."""
    return f'<section id="{esc(key)}"><h2>{esc(title)}</h2>{body}</section>'


def kpi(label: str, value: str) -> str:
    """One key figure box; ``value`` is markup (escape it first)."""
    return (
        f'<div class="kpi"><span class="label">{esc(label)}</span>'
        f'<span class="value">{value}</span></div>'
    )


CSS = (
    "\n"
    ":root{--fg:#1f2933;--muted:#616e7c;--line:#d9e2ec;--bg:#f7f9fb;"
    "--accent:#0b69a3}\n"
    "*{box-sizing:border-box}\n"
    "body{margin:0;"
    'font:14px/1.45 -apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;'
    "color:var(--fg);background:#fff}\n"
    "header{background:var(--bg);border-bottom:1px solid var(--line);"
    "padding:16px 24px}\n"
    "h1{margin:0 0 8px;font-size:22px;color:var(--accent)}\n"
    "dl{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;margin:0}\n"
    "dt{color:var(--muted)}dd{margin:0;word-break:break-all}\n"
    "main{padding:8px 24px 24px;max-width:1400px}\n"
    "section{border-bottom:1px solid var(--line);padding:8px 0 16px}\n"
    "h2{font-size:18px;margin:16px 0 8px}h3{font-size:15px;margin:14px 0 6px}\n"
    "table{border-collapse:collapse;margin:6px 0 10px;font-size:13px}\n"
    "th,td{border:1px solid var(--line);padding:3px 8px;text-align:left;"
    "vertical-align:top}\n"
    "th{background:var(--bg);font-weight:600}\n"
    "table.facts th{font-weight:400;color:var(--muted);white-space:nowrap}\n"
    "caption{text-align:left;font-weight:600;padding:2px 0 4px}\n"
    "td{font-variant-numeric:tabular-nums}\n"
    "table.variants td:nth-child(n+4):not(:last-child){text-align:right}\n"
    "img{max-width:100%;height:auto;border:1px solid var(--line);margin:6px 0}\n"
    ".kpis{display:flex;flex-wrap:wrap;gap:8px;margin:6px 0}\n"
    ".kpi{border:1px solid var(--line);border-radius:6px;padding:6px 12px;"
    "min-width:110px;background:var(--bg)}\n"
    ".kpi .label{display:block;color:var(--muted);"
    "font-size:12px}.kpi .value{font-size:16px;font-weight:600}\n"
    ".badge{display:inline-block;border-radius:10px;padding:1px 10px;font-size:12px;"
    "font-weight:600;color:#fff;vertical-align:middle}\n"
    ".green{background:#2f8132}.red{background:#c62828}.grey{background:#7b8794}\n"
    ".note{color:var(--muted)}\n"
    "ul.reasons li,ul.warn li{margin:2px 0;word-break:break-word}\n"
    "footer{color:var(--muted);font-size:12px;padding:12px 24px}\n"
    "a{color:var(--accent)}\n"
    ".banner{border:1px solid #f0b429;background:#fffbea;padding:6px 12px;"
    "border-radius:6px}\n"
)
