"""The vetting files' one owner: vetting/decisions.csv, where a person's accept/reject of synthetic images
lives, and quality/filters.csv, the automatic filters' verdicts (written by the quality stage); and which
images a vetted mix (mixes.VETTINGS) leaves out.

One row per image (generator name and manifest path), columns DECISIONS_FIELDS, sorted by generator
then path so that the git-tracked file diffs cleanly. A row remembers the sha256 of the image that was
judged: `left_out` matches on it, so an image regenerated at the same path is a new image, judged by
no one yet, and is not rejected for its predecessor's sake. Setting a decision again replaces the
row (the latest wins); every change is a locked read-modify-write and an atomic replace, so two
reviewers saving at once both land and a reader never sees half a file.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, get_args

from synthmix.core.errors import UserError
from synthmix.core.files import locked, read_csv, write_csv

if TYPE_CHECKING:
    from synthmix.data.mixes import Mix
    from synthmix.generate.manifest import SyntheticRow

DECISIONS_PATH = Path("vetting/decisions.csv")
DECISIONS_FIELDS = ("generator", "path", "sha256", "decision", "decided_at")

Verdict = Literal["accept", "reject"]
VERDICTS: tuple[str, ...] = get_args(Verdict)


@dataclass(frozen=True)
class Decision:
    """A person's verdict on one synthetic image of generator `generator` (its params.yaml name)."""

    generator: str
    path: Path  # as the generator's manifest lists it
    sha256: str  # of the image that was judged
    decision: Verdict
    decided_at: str  # ISO 8601, UTC, to the second

    @property
    def key(self) -> tuple[str, str]:
        return self.generator, self.path.as_posix()


def verdict(text: str) -> Verdict:
    """`text` as a Verdict; a UserError naming the allowed values otherwise."""
    if text not in VERDICTS:
        raise UserError(f"A decision is one of {', '.join(VERDICTS)}, not {text!r}.")
    return cast(Verdict, text)


def now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def read_decisions(path: Path = DECISIONS_PATH) -> list[Decision]:
    """Every decision in the file; none when it does not exist yet."""
    rows = read_csv(
        path,
        DECISIONS_FIELDS,
        None,
        lambda columns: (
            f"{path} is not a synthmix decisions file (columns {columns}, expected "
            f"{', '.join(DECISIONS_FIELDS)}). Restore it from git (`git checkout {path}`) or move it away."
        ),
    )
    try:
        return [
            Decision(r["generator"], Path(r["path"]), r["sha256"], verdict(r["decision"]), r["decided_at"])
            for r in rows
        ]
    except UserError as exc:
        raise UserError(f"{path}: {exc} Fix that row or restore the file from git.") from None


def write_decisions(decisions: Iterable[Decision], path: Path = DECISIONS_PATH) -> None:
    """Write the file atomically, one row per image (the last of several for one image wins), sorted."""
    latest = {d.key: d for d in decisions}
    write_csv(
        DECISIONS_FIELDS,
        (
            (d.generator, d.path.as_posix(), d.sha256, d.decision, d.decided_at)
            for _, d in sorted(latest.items())
        ),
        path,
    )


def set_decision(decision: Decision, path: Path = DECISIONS_PATH) -> Decision:
    """Record `decision`, replacing any earlier one on the same image; safe against concurrent writers
    (other threads or processes doing the same)."""
    with locked(path):
        write_decisions([*read_decisions(path), decision], path)
    return decision


def decide(generator: str, row: SyntheticRow, decision: Verdict, path: Path = DECISIONS_PATH) -> Decision:
    """Record `decision` on manifest row `row` of generator `generator`, stamped now."""
    made = Decision(generator, row.path, row.sha256, decision, now())
    return set_decision(made, path)


def current(
    decisions: Sequence[Decision], generator: str, rows: Sequence[SyntheticRow]
) -> dict[Path, Verdict]:
    """The decision standing for each of `rows` (a manifest of generator `generator`) that has one: a
    decision made on the image now at that path (same sha256), not on an earlier one there."""
    by_key = {d.key: d for d in decisions}
    standing: dict[Path, Verdict] = {}
    for row in rows:
        found = by_key.get((generator, row.path.as_posix()))
        if found is not None and found.sha256 == row.sha256:
            standing[row.path] = found.decision
    return standing


# --- the automatic filters' verdicts (quality/filters.csv) ----------------------------------------

FILTERS_NAME = "filters.csv"
FILTER_FIELDS = (
    "generator",
    "label",
    "index",
    "path",
    "sha256",
    "rejected_by",
    "pixel_std",
    "predicted",
    "confidence",
    "clip_score",
)
ALWAYS_LEFT_OUT = ("blocked", "near_test")  # every mix leaves these out (SyntheticRow.usable)


@dataclass(frozen=True)
class FilterRow:
    """One synthetic image of generator `generator` and what the filters made of it: `rejected_by`
    names every filter that rejected it (ALWAYS_LEFT_OUT ones included), empty when all kept it.
    `predicted` and `confidence` are the reference classifier's class and its probability of the
    image's own class; `clip_score` is None when no CLIP model was available."""

    generator: str
    label: str
    index: int
    path: Path
    sha256: str
    rejected_by: tuple[str, ...]
    pixel_std: float
    predicted: str
    confidence: float
    clip_score: float | None

    @property
    def filtered_out(self) -> bool:
        """Rejected by a quality filter (not only left out by every mix as blocked or a test near-copy)."""
        return any(name not in ALWAYS_LEFT_OUT for name in self.rejected_by)


def write_filter_rows(rows: Iterable[FilterRow], path: Path) -> None:
    """Write quality/filters.csv atomically, sorted by generator, class and index."""
    ordered = sorted(rows, key=lambda r: (r.generator, r.label, r.index))
    write_csv(
        FILTER_FIELDS,
        (
            (
                r.generator,
                r.label,
                r.index,
                r.path.as_posix(),
                r.sha256,
                ";".join(r.rejected_by),
                f"{r.pixel_std:.4f}",
                r.predicted,
                f"{r.confidence:.6f}",
                "" if r.clip_score is None else f"{r.clip_score:.6f}",
            )
            for r in ordered
        ),
        path,
    )


def read_filter_rows(path: Path) -> list[FilterRow]:
    """quality/filters.csv; a UserError saying how to make it when it is missing or not one."""
    rows = read_csv(
        path,
        FILTER_FIELDS,
        f"{path} does not exist: a @filtered or @vetted mix needs the quality stage's verdicts. Run "
        "`synthmix quality` (or `dvc repro`) first.",
        lambda columns: (
            f"{path} is not a synthmix filters file (columns {columns}). Delete it and rerun "
            "`synthmix quality`."
        ),
    )
    return [
        FilterRow(
            r["generator"],
            r["label"],
            int(r["index"]),
            Path(r["path"]),
            r["sha256"],
            tuple(n for n in r["rejected_by"].split(";") if n),
            float(r["pixel_std"]),
            r["predicted"],
            float(r["confidence"]),
            float(r["clip_score"]) if r["clip_score"] else None,
        )
        for r in rows
    ]


def left_out(
    vetting: str, generator: str, filters: Sequence[FilterRow], decisions: Sequence[Decision]
) -> frozenset[str]:
    """The sha256 of the images of generator `generator` that a mix vetted by `vetting` leaves out:
    those a quality filter rejected (filtered), a person rejected (reviewed), or either (vetted)."""
    out: set[str] = set()
    if vetting in ("filtered", "vetted"):
        out |= {r.sha256 for r in filters if r.generator == generator and r.filtered_out}
    if vetting in ("reviewed", "vetted"):
        latest = {d.key: d for d in decisions if d.generator == generator}
        out |= {d.sha256 for d in latest.values() if d.decision == "reject"}
    return frozenset(out)


def left_out_by_mix(
    mixes: Sequence[Mix], first_generator: str, filters_path: Path, decisions_path: Path = DECISIONS_PATH
) -> dict[Mix, frozenset[str]]:
    """For every vetted mix of `mixes`, the sha256 of the synthetic images its vetting leaves out. The
    files name generators as params.yaml does: a mix without a -<generator> suffix takes
    `first_generator`'s images. Reads quality/filters.csv only when a mix is filtered (or vetted),
    vetting/decisions.csv only when one is reviewed (or vetted)."""
    vetted = [m for m in dict.fromkeys(mixes) if m.vetting]
    needs_filters = any(m.vetting in ("filtered", "vetted") for m in vetted)
    filters = read_filter_rows(filters_path) if needs_filters else []
    decisions = read_decisions(decisions_path) if any(m.vetting != "filtered" for m in vetted) else []
    return {m: left_out(m.vetting, m.generator or first_generator, filters, decisions) for m in vetted}
