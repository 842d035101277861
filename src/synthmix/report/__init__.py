"""The study's report: summary table, figures, findings in words, report.md and a self-contained HTML.

Reads the finished runs under runs/ (docs/layout.md), the real training split and the synthetic set;
writes reports/ (summary.csv, summary.md, report.md, report.html, figures/*.png) and logs it to the
sweep's parent MLflow run. Every number in the text is computed from the runs, never written by hand.

Intervals per configuration are Student-t over seeds (metrics.json of each run). Changes against the
real-only baseline are paired: seed k of a mix against seed k of the baseline, image by image over the
same test images, with a paired bootstrap for the classification metrics and a paired t-test over
seeds for test loss; the p-values of each model and metric are Holm-adjusted as one family.

The modules, in the order data flows through them (each imports only those before it):
stats (the statistics) -> figures (matplotlib drawing) -> cells (runs grouped into (model, source,
mix) cells) -> comparisons (planned pairs, paired tests, Holm) -> wording (numbers and sentences) ->
tables (summary.csv and the document's tables) -> study_figures (cells turned into figures) ->
document (Markdown and HTML from templates/) -> stage (write_report: orchestration, MLflow).
"""

from synthmix.report.stage import ReportResult, write_report

__all__ = ["ReportResult", "write_report"]
