"""What produced the results, in words: how the runs were trained (budget, augmentation policy) for the
method paragraph, and the generator, weights, seeds, code, data and runs for the provenance section.

Every sentence comes from what the runs recorded (run.json), synthetic/manifest.csv and
prepared/split.json, never from what params.yaml says now.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from synthmix.config.params import Params
from synthmix.generate.manifest import SyntheticRow, read_synthetic_manifest
from synthmix.generate.manifest import provenance as row_provenance
from synthmix.report.cells import Cell, StudyRuns
from synthmix.report.comparisons import Results
from synthmix.report.wording import model_name, model_names

# --- how the runs were trained -------------------------------------------------------------------


def training_method(results: Results) -> str:
    """The training budget and, when any run augmented, the augmentation policy: for the method."""
    return " ".join(s for s in (training_budget(results), augmentation_policy(results.cells)) if s)


def training_budget(results: Results) -> str:
    """Epochs, or compute-matched optimiser steps, with the steps each mix took (run.json)."""
    cells = results.cells
    budgets = sorted({r.record.budget for c in cells for r in c.runs})
    names = model_names(cells)
    by_model: dict[str, list[str]] = defaultdict(list)
    for c in cells:
        by_model[c.model].append(f"{c.name} {_span(sorted({r.record.optimizer_steps for r in c.runs}))}")
    steps = "; ".join(f"{names[m]}: {', '.join(parts)}" for m, parts in by_model.items())
    if budgets == ["steps"]:
        return (
            "Training budget: compute-matched, every mix trained for as many optimiser steps as the baseline "
            f"{results.baseline} takes in its model's epochs, so a larger mix sees each image in fewer "
            f"epochs (optimiser steps a run, {steps})."
        )
    if budgets == ["epochs"]:
        epochs = "; ".join(f"{names[m]} {_span(_epochs(cells, m))} epochs" for m in by_model)
        return (
            f"Training budget: every run trained for its model's epochs ({epochs}), so a mix with more "
            f"images a class also took more optimiser steps (optimiser steps a run, {steps}): a gain of a "
            "larger mix may come from the extra compute as well as from its images."
        )
    which = {
        b: ", ".join(dict.fromkeys(c.name for c in cells if any(r.record.budget == b for r in c.runs)))
        for b in budgets
    }
    listed = "; ".join(f"{b}: {mixes}" for b, mixes in which.items())
    return (
        f"Training budget: not the same for every run ({listed}; optimiser steps a run, {steps}), so "
        "changes between mixes of different budgets mix the effect of the images with that of compute."
    )


def _epochs(cells: Sequence[Cell], model: str) -> list[int]:
    return sorted(
        {int(r.hyperparameters.get("epochs", 0)) for c in cells if c.model == model for r in c.runs}
    )


def augmentation_policy(cells: Sequence[Cell]) -> str:
    """The augmentation policy every augmenting run recorded, and which mixes used it; '' if none."""
    policies: dict[str, list[str]] = defaultdict(list)
    for c in cells:
        for policy in dict.fromkeys(r.record.augmentation for r in c.runs if r.record.augmentation):
            policies[policy].append(c.name)
    if not policies:
        return ""
    how = []
    if any(c.mix.augmented for c in cells):
        how.append("an augmented copy (NrKa) is drawn once per replicate from its real image")
    if any(c.mix.online_augment for c in cells):
        how.append("a +aug mix augments every training image afresh each epoch")
    listed = "; ".join(f"{', '.join(dict.fromkeys(m))}: {p}" for p, m in policies.items())
    plural = "policy" if len(policies) == 1 else "policies"
    return f"Augmentation {plural} ({listed}); {' and '.join(how)}."


# --- provenance ----------------------------------------------------------------------------------


def provenance(params: Params, runs: StudyRuns, generator_note: str | None = None) -> list[str]:
    """What produced the report: generator (and which real images it learned from, from
    prepared/split.json when there is one), weights, seeds, code and data versions, runs read."""
    from synthmix.runs.tracking import dvc_file_hash, git_commit

    selected = runs.selected
    weights = sorted({f"{model_name(r.model, selected)}: {r.weights}" for r in selected})
    seeds = sorted({r.seed for r in selected})
    return [
        *(
            line
            for name in params.generate.names
            for line in generator_lines(params.generate.manifest_path(name), name, len(params.generate.names))
        ),
        *([generator_note] if generator_note else []),
        real_copies_line(params.data.prepared_dir / "rejected.csv"),
        f"Model weights: {'; '.join(weights)}.",
        f"Seeds (replicates): {', '.join(map(str, seeds))}; bootstrap seed {params.report.seed}.",
        f"Code: git {git_commit()}; real set (data.dvc) md5 {dvc_file_hash()}.",
        f"Runs read from {runs.runs_dir}/: {len(selected)} used, "
        f"{len(runs.found) - len(selected)} finished runs outside this study's models, mixes and seeds "
        f"left out, {len(runs.unfinished)} unfinished.",
    ]


def real_copies_line(rejected_csv: Path) -> str:
    """One line: how many real images prepare left out as near-copies of others, by class."""
    from synthmix.data.real import read_rejections
    from synthmix.data.split import copy_losses

    if not rejected_csv.exists():
        return f"Near-copies among the real images: unknown ({rejected_csv} is missing; rerun prepare)."
    lost = {label: sum(by.values()) for label, by in copy_losses(read_rejections(rejected_csv)).items()}
    if not lost:
        return "Near-copies among the real images: none (every split checked against every other and itself)."
    ranked = sorted(lost.items(), key=lambda item: (-item[1], item[0]))
    listing = ", ".join(f"'{label}' {n}" for label, n in ranked[:5]) + (
        f" and {len(ranked) - 5} more classes" if len(ranked) > 5 else ""
    )
    return (
        f"Near-copies among the real images: prepare left out {sum(lost.values())} as copies of another "
        f"image ({listing}); {rejected_csv} names each one's twin and both scores."
    )


def generator_lines(manifest: Path, name: str = "", generators: int = 1) -> list[str]:
    """Which generator made the synthetic set `name`, from its manifest (synthetic/manifest.csv for the
    first generator, synthetic/@<name>/manifest.csv for another)."""
    from synthmix.runs.tracking import file_hash

    if not manifest.exists():
        return [f"No synthetic set ({manifest} is missing): only mixes without its images could run."]
    rows = read_synthetic_manifest(manifest)
    if not rows:
        return [f"{manifest} lists no images."]
    groups: dict[tuple[str, str, str], list[SyntheticRow]] = defaultdict(list)
    for r in rows:
        groups[(r.generator, r.model_id, r.revision)].append(r)
    lines = []
    for (generator, model_id, revision), group in sorted(groups.items()):
        steps = sorted({r.steps for r in group})
        guidance = sorted({r.guidance for r in group})
        named = f"Synthetic set '{name}': generator" if generators > 1 else "Generator"
        lines.append(
            f"{named} {generator}, model {model_id or 'n/a'}"
            f"{f' (revision {revision})' if revision else ''}: {len(group)} images in "
            f"{len({r.label for r in group})} classes, {', '.join(map(str, steps))} steps, guidance "
            f"{', '.join(f'{g:g}' for g in guidance)}, seeds {_span(sorted({r.seed for r in group}))}, "
            f"{sum(r.retries for r in group)} retries, {sum(r.blocked for r in group)} still blocked by the "
            f"safety checker and {sum(r.near_test_path is not None for r in group)} near-copies of a test "
            "image (neither kind is ever trained on). Provenance: "
            f"{_provenance(generator, group)}."
        )
    lines.append(f"{manifest.as_posix()} sha256 {file_hash(manifest)[:16]}.")
    return lines


def _provenance(generator: str, group: Sequence[SyntheticRow]) -> str:
    """What the generator's images derive from (one generator's rows share it; an image-to-image row
    names its source)."""
    made_from_images = [r for r in group if r.source_path is not None]
    return row_provenance((made_from_images or list(group))[0])


def _span(values: Sequence[int]) -> str:
    """Sorted distinct ints, briefly: a run as 'a-b', many scattered ones (per-image seeds) as a count."""
    if len(values) > 3 and values[-1] - values[0] == len(values) - 1:
        return f"{values[0]}-{values[-1]}"
    if len(values) > 6:
        return f"{len(values)} distinct per-image seeds"
    return ", ".join(map(str, values))
