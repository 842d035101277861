"""vetting/decisions.csv: the one owner of the file where a person's accept/reject of synthetic images lives.

One row per image (generator name and manifest path), columns DECISIONS_FIELDS, sorted by generator
then path so that the git-tracked file diffs cleanly. A row remembers the sha256 of the image that was
judged: `rejected` matches on it, so an image regenerated at the same path is a new image, judged by
no one yet, and is not rejected for its predecessor's sake. Setting a decision again replaces the
row (the latest wins); every change is a locked read-modify-write and an atomic replace, so two
reviewers saving at once both land and a reader never sees half a file.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal, cast, get_args

from synthmix.errors import UserError
from synthmix.files import locked, write_csv

if TYPE_CHECKING:
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
    if not path.exists():
        return []
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        if tuple(reader.fieldnames or ()) != DECISIONS_FIELDS:
            raise UserError(
                f"{path} is not a synthmix decisions file (columns {reader.fieldnames}, expected "
                f"{', '.join(DECISIONS_FIELDS)}). Restore it from git (`git checkout {path}`) or move it away."
            )
        rows = list(reader)
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


def rejected(decisions: Sequence[Decision], rows: Sequence[SyntheticRow]) -> set[Path]:
    """The paths of `rows` whose image (by sha256) a person rejected: what a mix must leave out."""
    latest = {d.key: d for d in decisions}  # a later row on the same image wins
    shas = {d.sha256 for d in latest.values() if d.decision == "reject"}
    return {row.path for row in rows if row.sha256 in shas}
