"""The one-file Data Docs page that MLflow's artifact viewer renders."""

from __future__ import annotations

from pathlib import Path

from recops.validation.contract import SELF_CONTAINED_DOCS
from recops.validation.docs_page import self_contained_docs

PAGE = """<html><head>
<link rel="stylesheet" href="https://cdn.example/bootstrap.css"/>
<style>.ge-table {{ color: red; }}</style>
<script src="https://cdn.example/jquery.js"></script></head>
<body><nav><a href="../../../index.html">Home</a></nav>
<img src="../../../static/images/logo.png">
<table class="ge-table"><tr><td onclick="go()">{name} rows</td><td>{count}</td></tr></table>
<script>window.alert(1)</script><a href="#overview">Overview</a></body></html>"""


def _site(root: Path) -> Path:
    (root / "static" / "styles").mkdir(parents=True)
    (root / "static" / "styles" / "data_docs_default_styles.css").write_text(".site { x: 1 }")
    for name, count in (("users", 7), ("items", 9)):
        folder = root / "validations" / f"{name}_suite" / "__none__" / "20260101T000000Z"
        folder.mkdir(parents=True)
        (folder / f"recops-{name}.html").write_text(PAGE.format(name=name, count=count))
    return root


def test_one_page_holds_every_validation_without_scripts_or_outside_links(
    tmp_path: Path,
) -> None:
    page = self_contained_docs(_site(tmp_path / "data_docs"))
    assert page == tmp_path / "data_docs" / SELF_CONTAINED_DOCS
    text = page.read_text()
    # Both suites' tables, each under its own anchored section, listed in the contents.
    assert "users rows" in text and "items rows" in text
    assert text.index('href="#page-0">items_suite') < text.index('href="#page-1">users_suite')
    # Styles are inlined (the site's stylesheet and the pages' own); nothing loads from
    # elsewhere and nothing runs in the viewer's sandboxed frame.
    assert ".site { x: 1 }" in text and ".ge-table { color: red; }" in text
    for gone in ("<script", "<link", "cdn.example", "onclick", "logo.png", "index.html"):
        assert gone not in text, gone
    assert 'href="#overview"' in text  # in-page links still work


def test_a_site_without_results_says_so(tmp_path: Path) -> None:
    (tmp_path / "docs").mkdir()
    assert "No validation results" in self_contained_docs(tmp_path / "docs").read_text()
