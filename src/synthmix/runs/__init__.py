"""The record of the study's runs.

- `rundir`: runs/<model>/<mix>/<seed>/, the run folder (its one owner): write, read, discover.
- `evaluate`: scores from logits (accuracy, macro precision / recall / F1, per class).
- `summaries`: metrics.json, metrics_detail.json and plots/ for DVC.
- `tracking`: MLflow: the tag vocabulary and one way to open a stage's run.
- `mlflow_log`: one training run in MLflow, its model and how it loads back.
"""
