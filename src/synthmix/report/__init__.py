"""The study's report: summary table, figures, findings in words, report.md and a self-contained HTML.

Reads the finished runs under runs/ (docs/layout.md), the real training split, the synthetic set,
prepared/split.json and the quality stage's quality/ (when it ran); writes reports/ (summary.csv, summary.md, report.md, report.html, figures/*.png,
figures/headline.csv) and logs it to the sweep's parent MLflow run. Every number in the text is computed from the runs, never written by hand.

Intervals per configuration are Student-t over replicates (seeds; metrics.json of each run). Changes
against the baseline are paired: replicate k of a mix against replicate k of the baseline, image by
image over the same test images. A change's standard error adds the spread of the per-replicate
changes and the test-image draw they share (a paired bootstrap over test images), with a Student t
reference (stats.py says exactly how); test loss, known only per run, gets a paired t-test over
replicates. Verdicts come from one declared family: report.primary_metric of every study mix against
the baseline, of every synthetic study mix against its augmentation control, of another generator's
mix against the first's and of a vetted mix against the same mix unvetted, per model and
hyperparameter source, Holm-adjusted; the rest is shown as exploratory.

The modules, in the order data flows through them (each imports only those before it):
stats (the statistics) -> figures (matplotlib drawing) -> cells (runs grouped into (model, source,
mix) cells) -> controls (which mixes are controls, and what each answers) -> comparisons (planned
pairs, paired tests, the declared family, Holm) -> wording (numbers and sentences) -> tables
(summary.csv and the document's tables) and provenance (how the runs were trained, what produced
them) -> quality_gain (a class's synthetic-image quality against its gain in F1) -> synthetic (the
synthetic-data section: quality tables, filter drops, vetted mixes that came up short) ->
exchange (what synthetic images are worth in real ones) and synthetic_figures (closest synthetic-to-real
pairs, dropped examples) -> study_figures (cells turned into figures) -> headline (the first figure, its CSV, the sentences at the top) -> document (Markdown and
HTML from templates/). The stage that runs them, reads runs/ and logs to MLflow is
synthmix.stages.report (report_stage).
"""
