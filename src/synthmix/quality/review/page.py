"""The review page's content: per class, the generator's synthetic images with their standing decision,
beside a few real training images of the class; rendered from report/templates/review.html.j2."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlencode

import jinja2

from synthmix.data.vetting import Verdict, current, read_decisions
from synthmix.generate.manifest import SyntheticRow
from synthmix.quality.review.catalog import Catalog

REAL_PER_CLASS = 4  # real training images shown beside each class's synthetic ones
CSS_CLASS = {"accept": "accepted", "reject": "rejected", None: "undecided"}


@dataclass(frozen=True)
class Tile:
    """One synthetic image on the page."""

    path: str  # as its manifest lists it: what POST /decision names
    url: str
    decision: Verdict | None
    note: str  # why training skips it anyway (blocked, near-copy of a test image), else ""

    @property
    def css_class(self) -> str:
        return CSS_CLASS[self.decision]


@dataclass(frozen=True)
class ClassSection:
    label: str
    tiles: list[Tile]
    real_urls: list[str]


def image_url(path: Path) -> str:
    return "/image?" + urlencode({"path": path.as_posix()})


def sections(catalog: Catalog, generator: str, decisions_path: Path) -> list[ClassSection]:
    """Generator `generator`'s images class by class, in manifest order, with their standing decisions."""
    rows = catalog.synthetic(generator)
    standing = current(read_decisions(decisions_path), generator, rows)
    real: dict[str, list[Path]] = defaultdict(list)
    for split_row in sorted(catalog.real(), key=lambda r: r.rank):
        real[split_row.label].append(split_row.path)
    by_class: dict[str, list[Tile]] = defaultdict(list)
    for row in rows:
        by_class[row.label].append(
            Tile(row.path.as_posix(), image_url(row.path), standing.get(row.path), _note(row))
        )
    return [
        ClassSection(label, tiles, [image_url(p) for p in real[label][:REAL_PER_CLASS]])
        for label, tiles in by_class.items()
    ]


def _note(row: SyntheticRow) -> str:
    if row.blocked:
        return "blocked by the safety checker: never trained on"
    if row.near_test_path is not None:
        return f"near-copy of test image {row.near_test_path.as_posix()}: never trained on"
    return ""


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("synthmix", "report/templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,
)


def render_page(catalog: Catalog, generator: str, decisions_path: Path) -> str:
    return _ENV.get_template("review.html.j2").render(
        generator=generator,
        generators=catalog.generators,
        sections=sections(catalog, generator, decisions_path),
        decisions_path=decisions_path,
        has_real=bool(catalog.real()),
        generator_url=lambda name: "/?" + urlencode({"generator": name}),
    )


def render_message(title: str, text: str) -> str:
    """A page that only says what went wrong (an unknown generator, a manifest not there yet)."""
    return _ENV.get_template("review.html.j2").render(error_title=title, error_text=text)
