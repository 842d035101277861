"""Resumable training checkpoints for the generators trained here (the DDPM, a LoRA fine-tune).

`<root>/checkpoint-<step>/<part>.safetensors` plus `fingerprint.json` (written last: a folder without
it is never resumed), each folder written under a temporary name and renamed. The fingerprint names
the settings and data that shaped the weights: a checkpoint with another one is deleted, not resumed.
The last two checkpoints are kept, so one that no longer loads (a truncated or missing file, a garbled
fingerprint.json) is deleted with a warning naming it and training resumes from the one before.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from synthmix.core.errors import one_line
from synthmix.core.files import atomic_path

if TYPE_CHECKING:
    import torch

FINAL_DIR = "final"
FINGERPRINT_FILE = "fingerprint.json"
LOSS_LOG_EVERY = 10  # steps between logged (mean) losses


def step_seed(trainer: str, seed: int, step: int) -> int:
    """The seed of every random draw of training step `step`: a resumed training draws what an
    uninterrupted one would have."""
    return int.from_bytes(hashlib.sha256(f"{trainer}-train:{seed}:{step}".encode()).digest()[:8], "big") >> 1


def fingerprint_of(directory: Path) -> str | None:
    """The fingerprint a checkpoint or final model was saved with (None if it has none)."""
    state = json.loads((directory / FINGERPRINT_FILE).read_text())
    fingerprint = state.get("fingerprint") if isinstance(state, dict) else None
    return fingerprint if isinstance(fingerprint, str) else None


def write_fingerprint(directory: Path, fingerprint: str, **more: Any) -> None:
    with atomic_path(directory / FINGERPRINT_FILE) as path:
        path.write_text(json.dumps({"fingerprint": fingerprint, **more}))


def discard(directory: Path, problem: str, what: str) -> None:
    """Delete a checkpoint or final model that does not load, with one warning naming it."""
    shutil.rmtree(directory, ignore_errors=True)
    instead = (
        "rebuilding it from the last checkpoint that loads"
        if directory.name == FINAL_DIR
        else "resuming from the checkpoint before it (or from scratch)"
    )
    warnings.warn(
        f"{what} checkpoint {directory} does not load ({problem}): deleted, {instead}.", stacklevel=3
    )


def drop_stale(root: Path, fingerprint: str, what: str) -> None:
    """Delete checkpoints and a final model trained with other settings or data, so none is resumed,
    and those whose fingerprint.json does not read back (with a warning: they were damaged)."""
    if not root.exists():
        return
    for entry in sorted(root.iterdir()):
        if entry.name.endswith(".tmp"):
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
        elif entry.is_dir() and not entry.name.startswith("@"):  # @<name>: another generator's own root
            try:
                stale = fingerprint_of(entry) != fingerprint
            except (OSError, ValueError) as exc:  # missing, unreadable, not JSON
                discard(entry, f"{FINGERPRINT_FILE}: {one_line(exc)}", what)
                continue
            if stale:
                shutil.rmtree(entry)


def checkpoint_dirs(root: Path, fingerprint: str) -> list[tuple[int, Path]]:
    found = []
    for entry in root.glob("checkpoint-*"):
        if entry.is_dir() and entry.name.split("-")[1].isdigit() and fingerprint_of(entry) == fingerprint:
            found.append((int(entry.name.split("-")[1]), entry))
    return sorted(found)


def save_checkpoint(
    root: Path, step: int, fingerprint: str, parts: Mapping[str, Mapping[str, torch.Tensor]]
) -> None:
    """Write checkpoint-<step>/ (one safetensors file per part) under a temporary name and rename it
    (never half-written); keep it and the one before it (the fallback should it be damaged later)."""
    from safetensors.torch import save

    target = root / f"checkpoint-{step}"
    tmp = root / f"checkpoint-{step}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        for part, tensors in parts.items():
            # Serialised in memory, written by Python: a full disk then names the file it failed on.
            data = save({k: v.contiguous() for k, v in tensors.items()})
            with atomic_path(tmp / f"{part}.safetensors") as path:
                path.write_bytes(data)
        write_fingerprint(tmp, fingerprint, step=step)  # last: a folder without it is never resumed
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # no half-written checkpoint left behind
        raise
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    older = [directory for older_step, directory in checkpoint_dirs(root, fingerprint) if older_step < step]
    for directory in older[:-1]:
        shutil.rmtree(directory)


def load_latest_checkpoint(
    root: Path, fingerprint: str, parts: Sequence[str], what: str
) -> tuple[int, dict[str, dict[str, torch.Tensor]]]:
    """The newest matching checkpoint that loads, as (step, {part: tensors}); (0, {}) if none. One that
    does not load is deleted with a warning and the one before it tried."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    for step, directory in reversed(checkpoint_dirs(root, fingerprint)):
        try:
            return step, {part: load_file(directory / f"{part}.safetensors") for part in parts}
        except (OSError, SafetensorError) as exc:  # a missing file; a torn one ("file not fully covered")
            discard(directory, one_line(exc), what)
    return 0, {}


def optimizer_tensors(optimizer) -> dict[str, torch.Tensor]:
    """An optimiser's per-parameter state as flat named tensors, for safetensors."""
    tensors = {}
    for index, state in optimizer.state_dict()["state"].items():
        for key, value in state.items():
            tensors[f"{index}.{key}"] = value.detach().reshape(value.shape).contiguous().clone()
    return tensors


def optimizer_state(optimizer, tensors: Mapping[str, torch.Tensor]) -> dict[str, Any]:
    """optimizer_tensors' output back as a state dict `optimizer.load_state_dict` takes."""
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        index, key = name.split(".", 1)
        state.setdefault(int(index), {})[key] = value
    return {"state": state, "param_groups": optimizer.state_dict()["param_groups"]}


@dataclass
class StepLog:
    """What a resumable training loop does after each step: log the mean loss of the last
    LOSS_LOG_EVERY steps, write a checkpoint every `checkpoint_every` steps and after the last one,
    then call `on_step(step)` (tests use it to interrupt training)."""

    root: Path
    fingerprint: str
    total: int  # the training's last step
    checkpoint_every: int
    log_loss: Callable[[float, int], None]
    on_step: Callable[[int], None] | None = None
    recent: list[float] = field(default_factory=list)

    def after(
        self, done: int, loss: float, parts: Callable[[], Mapping[str, Mapping[str, torch.Tensor]]]
    ) -> None:
        """Step `done` (from 1) finished with `loss`; `parts()` gives the checkpoint's tensors."""
        self.recent.append(loss)
        last = done == self.total
        if done % LOSS_LOG_EVERY == 0 or last:
            self.log_loss(sum(self.recent) / len(self.recent), done)
            self.recent.clear()
        if done % self.checkpoint_every == 0 or last:
            save_checkpoint(self.root, done, self.fingerprint, parts())
        if self.on_step is not None:
            self.on_step(done)


def write_final(final: Path, fingerprint: str, write: Callable[[Path], None]) -> None:
    """The finished model: `write(folder)` fills a temporary folder, the fingerprint goes in last, and
    the folder replaces `final` whole (a crash leaves the old one or none, never half of one)."""
    tmp = final.with_name(final.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    try:
        write(tmp)
        write_fingerprint(tmp, fingerprint)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)
