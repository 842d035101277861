"""The report's answer, shown first under its title: a compact verdict table and at most three sentences.

The table has one row per planned comparison of the declared family (report.primary_metric of each
study mix against the baseline, against its augmentation control, another generator against the
first, a vetted mix against the same mix unvetted) and one column per model: the change, its
interval and the verdict. The sentences count the verdicts and name the significant ones; every word
comes from `Results`, and none says more than the Holm-adjusted verdicts do.
"""

from __future__ import annotations

import math

from synthmix.data.mixes import Mix
from synthmix.report import controls
from synthmix.report.comparisons import Comparison, Results
from synthmix.report.tables import Table
from synthmix.report.wording import METRIC_LABELS, NO_VARIANCE, model_names, signed, verdict

MOST_NAMED = 3  # significant comparisons named in the sentences; the table has them all


def planned(results: Results) -> list[Comparison]:
    """The declared family's comparisons this report could test, in the report's order."""
    return [k for k in results.comparisons if k.in_family]


def _row_label(k: Comparison, results: Results) -> str:
    source = "" if k.b.source == "fixed" else f", {k.b.source} hyperparameters"
    return f"{_named(k.b.mix, results)} vs {_named(k.a.mix, results)}{source}"


def _named(mix: Mix, results: Results) -> str:
    return controls.named(mix, results.baseline)


def _cell_text(k: Comparison, results: Results) -> str:
    d = k.differences[results.primary]
    if math.isnan(d.estimate):
        return "n/a"
    if d.no_variance:
        return f"{signed(d.estimate)} ({NO_VARIANCE})"
    ci = f" ({signed(d.low)} to {signed(d.high)})" if not math.isnan(d.low) else ""
    return f"{signed(d.estimate)}{ci}: {verdict(k, results)}"


def verdict_table(results: Results) -> Table:
    """Rows: the planned comparisons; columns: the models; cells: change (interval): verdict."""
    names = model_names(results.cells)
    models = [m for m in results.models if any(k.model == m for k in planned(results))]
    rows: dict[str, dict[str, str]] = {}
    for k in planned(results):
        rows.setdefault(_row_label(k, results), {})[k.model] = _cell_text(k, results)
    label = METRIC_LABELS[results.primary]
    header = (f"change in {label} ({results.confidence:.0%} CI): verdict", *(names[m] for m in models))
    return Table(
        header, tuple((row, *(cells.get(m, "not run") for m in models)) for row, cells in rows.items())
    )


def sentences(results: Results) -> list[str]:
    """At most three sentences: how many planned comparisons were significantly better, worse or
    neither; which were better; which were worse."""
    found = planned(results)
    if not found:
        return [
            "No planned comparison could be tested: the report found no baseline runs to compare against."
        ]
    better = [k for k in found if verdict(k, results).startswith("significantly better")]
    worse = [k for k in found if verdict(k, results).startswith("significantly worse")]
    label = METRIC_LABELS[results.primary]
    names = model_names(results.cells)
    qualifier = " (exploratory: the declared family is incomplete)" if results.family.exploratory else ""
    out = [
        f"Of {len(found)} planned comparison{'s' if len(found) != 1 else ''} of {label} (Holm-adjusted at "
        f"{results.alpha:g}){qualifier}, {len(better)} {'is' if len(better) == 1 else 'are'} significantly "
        f"better, {len(worse)} significantly worse and {len(found) - len(better) - len(worse)} without a "
        "significant difference."
    ]
    for group, word in ((better, "better"), (worse, "worse")):
        if group:
            named = [
                f"{names[k.model]} {_named(k.b.mix, results)} vs {_named(k.a.mix, results)} ({signed(k.differences[results.primary].estimate)})"
                for k in group[:MOST_NAMED]
            ]
            more = f" and {len(group) - MOST_NAMED} more (table)" if len(group) > MOST_NAMED else ""
            out.append(f"Significantly {word}: {', '.join(named)}{more}.")
    return out
