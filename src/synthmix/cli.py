"""The `synthmix` command line: one thin subcommand per pipeline stage.

Each command reads params.yaml once into typed config, calls the module that does the work, and
turns a UserError into a one-paragraph message with exit code 2 (never a traceback); so too a write
that found the disk full or the file-size limit reached, wherever in the stage or its libraries.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import warnings
from collections import Counter
from pathlib import Path

import click
import typer
from rich.console import Console
from typer._click import exceptions as typer_click_exceptions

from synthmix.config.compute import Compute, resolve_compute
from synthmix.config.params import Params, load_params
from synthmix.core.errors import UserError, full_disk_error

app = typer.Typer(
    name="synthmix",
    help="Measure whether generated images added to a scarce real training set make a classifier better.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
data_app = typer.Typer(
    help="The real image set: embedded default data or your own images.", no_args_is_help=True
)
app.add_typer(data_app, name="data")

console = Console(stderr=True)

PARAMS_OPTION = typer.Option(Path("params.yaml"), "--params", help="The params.yaml to read settings from.")


def _settings(path: Path) -> tuple[Params, Compute]:
    """params.yaml, validated, and compute.* resolved against this machine: every command checks both
    (a GPU asked for and not there is a UserError, so exit 2, whichever command meets it)."""
    params = load_params(path)
    return params, resolve_compute(params.compute)


def _params(path: Path) -> Params:
    return _settings(path)[0]


def _dvc_add(path: Path) -> None:
    """Put `path` under DVC (writes path.dvc, fills the cache) when this is a DVC repo."""
    if not Path(".dvc").is_dir():
        console.print(
            f"[yellow]No DVC repository here (.dvc/ missing); {path} is not tracked. Run `dvc init`."
        )
        return
    dvc = shutil.which("dvc") or str(Path(sys.executable).with_name("dvc"))
    result = subprocess.run([dvc, "add", "--quiet", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        raise UserError(f"`dvc add {path}` failed: {result.stderr.strip() or result.stdout.strip()}")


@data_app.command("default")
def data_default(
    params_file: Path = PARAMS_OPTION,
    if_missing: bool = typer.Option(False, help="Do nothing when the real image folder already exists."),
    dvc: bool = typer.Option(True, help="Track the folder with DVC (dvc add) afterwards."),
) -> None:
    """Write the embedded default data (scikit-learn's handwritten digits) as one folder per class."""
    from synthmix.data.importing import write_default_data

    params = _params(params_file)
    target = params.data.dir
    if if_missing and target.exists() and any(target.iterdir()):
        console.print(f"{target} already exists; left as it is.")
        return
    count = write_default_data(target)
    console.print(f"Wrote {count} handwritten-digit images to {target}/<digit>/.")
    if dvc:
        _dvc_add(target)


@data_app.command("import")
def data_import(
    source: Path = typer.Argument(
        ..., help="A class-per-folder tree, e.g. animals/ holding animals/<class>/*.jpg."
    ),
    params_file: Path = PARAMS_OPTION,
    report: Path = typer.Option(Path("logs/import_report.csv"), help="Where to list the files left out."),
    dvc: bool = typer.Option(True, help="Track the imported set with DVC (dvc add) afterwards."),
) -> None:
    """Validate your own images and make them the real set (copied into data.dir, tracked by DVC)."""
    from synthmix.data.importing import import_tree, near_copies_per_class

    params = _params(params_file)
    from synthmix.data.split import SplitSizes, capacity_warnings

    cfg = params.data
    records, rejected = import_tree(source, cfg.dir, report)
    counts = dict(Counter(r.label for r in records))
    console.print(f"Imported {len(records)} images in {len(counts)} classes into {cfg.dir}/.")
    console.print(_class_counts_line(counts))
    if rejected:
        console.print(f"[yellow]Left out {len(rejected)} files; each is listed with its reason in {report}.")
    lost = near_copies_per_class(records)
    for label, n in sorted(lost.items(), key=lambda item: (-item[1], item[0]))[:10]:
        console.print(
            f"[yellow]Class '{label}': {n} image(s) are near-copies (resized, re-encoded, cropped, re-toned or "
            "mirrored) of another image; prepare keeps one of each and lists the rest in rejected.csv."
        )
    if len(lost) > 10:
        console.print(f"[yellow]... and {len(lost) - 10} more classes with near-copies.")
    distinct = {label: n - lost.get(label, 0) for label, n in counts.items()}
    sizes = SplitSizes(cfg.train_per_class, cfg.test_per_class, cfg.extra_per_class, cfg.pool_per_class)
    for warning in capacity_warnings(distinct, sizes, cfg.drop_small_classes):
        console.print(f"[yellow]Warning: {warning}", soft_wrap=True)
    if dvc:
        _dvc_add(params.data.dir)


def _class_counts_line(counts: dict[str, int]) -> str:
    """Images per class in one line: each class when there are few, else the smallest and the range."""
    ordered = sorted(counts.items(), key=lambda item: (item[1], item[0]))
    if len(ordered) <= 12:
        return "Images per class: " + ", ".join(f"{label} {count}" for label, count in ordered) + "."
    smallest = ", ".join(f"{label} {count}" for label, count in ordered[:5])
    return (
        f"Images per class: {ordered[0][1]} to {ordered[-1][1]} (median "
        f"{sorted(counts.values())[len(counts) // 2]}); the smallest: {smallest}."
    )


@app.command()
def prepare(params_file: Path = PARAMS_OPTION) -> None:
    """Validate the real set and write the seeded train/test split manifests."""
    from synthmix.stages.prepare import describe, prepare_stage

    params = _params(params_file)
    for line in describe(prepare_stage(params.data, params.study.mixes), params.data):
        console.print(line)


@app.command("generate")
def generate_command(
    params_file: Path = PARAMS_OPTION,
    generator: list[str] = typer.Option(
        [], "--generator", help="Only this generator (repeatable); default every one in params.yaml."
    ),
) -> None:
    """Make the synthetic images of every generator (generate.* and generate.generators), their
    manifests and sample grids.

    Resumable: a rerun keeps finished images made with the same settings. Scale out with
    `accelerate launch -m synthmix generate`; the set equals the single-process one.
    """
    from synthmix.stages.generate import generate_stage

    params, compute = _settings(params_file)
    for summary in generate_stage(params, generator, compute=compute):
        if not summary.is_main_process:
            continue
        cfg = params.generate.single(summary.name)
        warm = f" ({summary.warmup_seconds:.0f}s of it compiling, once)" if summary.warmup_seconds else ""
        console.print(
            f"{summary.name} ({cfg.generator}): {summary.generated} image(s) generated, {summary.reused} kept "
            f"from a previous run, {summary.classes} classes x {params.synthetic_per_class} -> {cfg.out_dir}/ "
            f"in {summary.seconds:.0f}s{warm}.",
            highlight=False,
        )
        if summary.retries or summary.blocked:
            console.print(
                f"[yellow]{summary.retries} blocked image(s) regenerated with the next seed; {summary.blocked} "
                f"still blocked after text2image.max_retries (see {summary.manifest}).",
                highlight=False,
            )
        if summary.near_test:
            console.print(
                f"[yellow]{summary.near_test} synthetic image(s) are near-copies of test images: flagged in "
                f"{summary.manifest} (near_test_path) and never trained on.",
                highlight=False,
            )


@app.command("tune")
def tune_command(
    model: list[str] | None = typer.Option(
        None, "--model", help="Model to tune (repeatable); default: every model in study.models."
    ),
    mix: list[str] | None = typer.Option(
        None, "--mix", help="Mix to tune, e.g. 30r30s (repeatable); default: the mixes `mix` selects."
    ),
    trials: int | None = typer.Option(
        None,
        "--trials",
        min=1,
        help="Finished trials per (model, mix), over all workers; default tune.trials.",
    ),
    storage: str | None = typer.Option(
        None,
        "--storage",
        help="Optuna storage URL that workers share, e.g. postgresql://...; default tune.storage.",
    ),
    if_enabled: bool = typer.Option(
        False, "--if-enabled", help="Tune only when tune.enabled is true (the dvc stage's switch)."
    ),
    params_file: Path = PARAMS_OPTION,
) -> None:
    """Tune hyperparameters per (model, mix) with Optuna on a validation split of the mix's training set.

    Run the same command in several processes (or machines, with a shared --storage) to split the
    trials between them; rerun it to continue an interrupted study.
    """
    from synthmix.config.hparams import ensure_best_params_file

    params, compute = _settings(params_file)
    if if_enabled and not params.tune.enabled:
        ensure_best_params_file(params.tune.best_params_file)
        console.print("tune.enabled is false in params.yaml: nothing tuned.")
        return
    from synthmix.stages.tune import tune_stage  # Optuna: only a machine that tunes needs it

    for result in tune_stage(params, model or (), mix or (), trials=trials, storage=storage, compute=compute):
        hp = result.hyperparameters
        console.print(
            f"{result.model} {result.mix}: best validation loss {result.value:.4f} over "
            f"{result.finished_trials} trials ({result.trials_here} run here): lr {hp.lr:.3g}, weight decay "
            f"{hp.weight_decay:.3g}, dropout {hp.dropout:.2f}, {hp.epochs} epochs, batch {hp.batch_size} "
            f"-> {params.tune.best_params_file}",
            highlight=False,
        )


@app.command("train")
def train_command(
    params_file: Path = PARAMS_OPTION,
    model: str | None = typer.Option(
        None,
        "--model",
        help="One model of the registry (cnn, resnet50, vit_b_16, ...) or all (default: study.models).",
    ),
    mix: str | None = typer.Option(None, "--mix", help="One mix, e.g. 30r15s, or all (default: mix)."),
    seed: int | None = typer.Option(None, "--seed", help="One seed (default: every seed in study.seeds)."),
) -> None:
    """Train, evaluate and log to MLflow every (model, mix, seed) run; finished runs are skipped."""
    from synthmix.config.params import check_model
    from synthmix.data.mixes import Mix
    from synthmix.stages.train import train_stage

    params, compute = _settings(params_file)
    models = None if model in (None, "all") else (check_model(model),)  # all: study.models
    mixes = None if mix is None else params.study.mixes if mix == "all" else (Mix.parse(mix),)
    result = train_stage(params, models, mixes, None if seed is None else (seed,), compute=compute)
    console.print(
        f"Trained {len(result.trained)} run(s), {len(result.skipped)} already finished; results in "
        f"{params.train.runs_dir}/, summaries in metrics.json and plots/."
    )


@app.command("quality")
def quality_command(params_file: Path = PARAMS_OPTION) -> None:
    """Measure each synthetic set against the real training images and run the automatic filters.

    Writes quality/ (filters.csv: what a @filtered mix leaves out; quality.json; nearest.csv) and
    quality_metrics.json, and logs them to MLflow.
    """
    from synthmix.stages.quality import describe, quality_stage

    params, compute = _settings(params_file)
    for line in describe(quality_stage(params, compute=compute), params):
        console.print(line, highlight=False, soft_wrap=True)


@app.command("report")
def report_command(
    params_file: Path = PARAMS_OPTION,
    mlflow: bool = typer.Option(
        True, "--mlflow/--no-mlflow", help="Log reports/ to the sweep's parent MLflow run (or a new one)."
    ),
) -> None:
    """Write reports/: summary table with CIs and paired tests, the study's figures, findings, report.html."""
    from synthmix.stages.report import report_stage

    result = report_stage(_params(params_file), log_to_mlflow=mlflow)
    for sentence in result.findings:
        console.print(f"- {sentence}", highlight=False, soft_wrap=True)
    console.print(
        f"Wrote {result.out_dir}/report.html, report.md, summary.csv, summary.md and "
        f"{len(result.figures)} figures."
        + (f" Logged to MLflow run {result.mlflow_run_id}." if result.mlflow_run_id else "")
    )
    if result.mlflow_url:
        from synthmix.runs import tracking

        start = (
            ""
            if tracking.tracking_server()
            else f" (start it: mlflow ui --backend-store-uri {tracking.tracking_uri()})"
        )
        console.print(
            f"The training runs in the MLflow UI{start}: {result.mlflow_url}", highlight=False, soft_wrap=True
        )


@app.command("review")
def review_command(
    port: int = typer.Option(8765, "--port", min=0, max=65535, help="Port to listen on (0: any free one)."),
    host: str = typer.Option(
        "127.0.0.1", "--host", help="Address to listen on; the default is reachable from this machine only."
    ),
    params_file: Path = PARAMS_OPTION,
) -> None:
    """Open a local page to accept or reject the synthetic images, class by class, beside real ones.

    Decisions are saved to vetting/decisions.csv as you make them (commit it); stop with Ctrl-C.
    """
    from synthmix.stages.review import review_stage, serve_until_stopped

    server = review_stage(_params(params_file), host, port)
    console.print(
        f"Review the synthetic images at {server.url} (decisions go to {server.decisions_path}); "
        "press Ctrl-C to stop.",
        highlight=False,
        soft_wrap=True,
    )
    serve_until_stopped(server)
    console.print("Stopped.", highlight=False)


@app.command("model-summary")
def model_summary_command(
    model: str = typer.Option("cnn", "--model", help="cnn or resnet50."),
    num_classes: int = typer.Option(90, "--num-classes", help="Number of classes of the new head."),
    image_size: int = typer.Option(128, "--image-size", help="Input side in pixels."),
) -> None:
    """Print a model's layers and its trainable parameter count (no network needed)."""
    from synthmix.models import model_summary

    typer.echo(model_summary(model, num_classes, image_size))


@app.command("check-params")
def check_params(params_file: Path = PARAMS_OPTION) -> None:
    """Validate params.yaml and print the mixes that would run."""
    params, compute = _settings(params_file)
    mixes = ", ".join(m.name for m in params.selected_mixes)
    console.print(
        f"{params_file} is valid. Mixes: {mixes}; models: {', '.join(params.study.models)}; "
        f"seeds: {', '.join(map(str, params.study.seeds))}; networks on {compute.describe()}."
    )


class _FullDiskLogged(logging.Filter):
    """Drops a library's log record of a full-disk error with its traceback (MLflow logs SQLite's
    before raising it): the error reaches `run`, which reports it once, as a message."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and record.exc_info[1] and full_disk_error(record.exc_info[1]))


# typer (0.29) raises usage errors from its own vendored copy of click, not click's classes.
_USAGE_ERRORS = tuple({click.exceptions.ClickException, typer_click_exceptions.ClickException})


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return its exit code; user errors (a full disk among them) print a message and
    return 2."""
    warnings.simplefilter("default")
    logging.getLogger("mlflow.store.db.utils").addFilter(_FullDiskLogged())
    try:
        result = app(args=argv, standalone_mode=False, prog_name="synthmix")
    except UserError as exc:
        return _user_error(exc)
    except (click.exceptions.Abort, typer.Abort):
        console.print("Aborted.")
        return 130
    except _USAGE_ERRORS as exc:
        exc.show()
        return exc.exit_code
    except (click.exceptions.Exit, typer.Exit) as exc:
        return exc.exit_code
    except Exception as exc:
        full_disk = full_disk_error(exc)
        if full_disk is None:
            raise
        return _user_error(full_disk)
    return result if isinstance(result, int) else 0


def _user_error(exc: UserError) -> int:
    console.print(f"[bold red]Error:[/] {exc}", highlight=False, soft_wrap=True)
    return 2


def main() -> None:
    sys.exit(run())
