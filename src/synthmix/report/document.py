"""The report as a document, rendered from Jinja2 templates as Markdown and as a self-contained HTML page.

The templates live in templates/: report.md.j2, summary.md.j2 (also the tables part of report.md),
report.html.j2 with report.css inlined. HTML is autoescaped; its figures are embedded as base64 PNG
data URIs, so report.html needs no other file.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import jinja2

from synthmix.report.study_figures import FigureRef
from synthmix.report.tables import Section, Table


@dataclass(frozen=True)
class Document:
    """Everything report.md and report.html say, in order; the headings live in the templates."""

    title: str
    headline: FigureRef | None  # the first figure, shown right under the title
    verdicts: Table  # the answer: each planned comparison's change, interval and verdict, per model
    answer: tuple[str, ...]  # at most three sentences under the verdict table
    intro: str
    summary: tuple[str, ...]  # the sentences at the top: augmentation control, exchange rate
    findings: tuple[str, ...]
    not_run_title: str
    not_run: tuple[str, ...]  # a line per study mix without runs, and why
    how_to_read: str
    sections: tuple[Section, ...]
    figures: tuple[FigureRef, ...]  # the others, in the Figures section
    provenance: tuple[str, ...]
    runs: Table


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("synthmix.report", "templates"),
        autoescape=lambda name: name is not None and name.endswith(".html.j2"),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )
    env.filters["md_cell"] = lambda cell: str(cell).replace("|", "\\|")
    return env


def render_markdown(doc: Document) -> str:
    """report.md: figures linked from figures/."""
    return _environment().get_template("report.md.j2").render(doc=doc)


def render_summary(sections: Sequence[Section]) -> str:
    """summary.md: the tables of the report alone."""
    return _environment().get_template("summary.md.j2").render(sections=sections).rstrip("\n") + "\n"


def render_html(doc: Document, root: Path, page_title: str = "synthmix report") -> str:
    """report.html: one page, CSS inline, every figure (read from `root`) embedded as a data URI."""

    def embedded(figure: FigureRef) -> str:
        return base64.b64encode((root / figure.path).read_bytes()).decode("ascii")

    figures = [(f, embedded(f)) for f in doc.figures]
    headline = embedded(doc.headline) if doc.headline else None
    return (
        _environment()
        .get_template("report.html.j2")
        .render(doc=doc, figures=figures, headline=headline, page_title=page_title)
    )
