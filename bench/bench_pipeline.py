"""Pipeline: `make run` end to end, a no-op `dvc repro`, and `dvc exp run -S mix=15r30s` after a full repro.

Runs in a fresh `git clone` of the repository (committed files only) in a temporary folder, with this
checkout's .venv binaries on PATH (linked, not reinstalled) and the clone's own src/ first on
PYTHONPATH, so the code timed is the committed code. Nothing in the original checkout is written.

    .venv/bin/python bench/bench_pipeline.py                       # the committed params.yaml
    .venv/bin/python bench/bench_pipeline.py --set train.cnn.epochs=2 --set generate.ddpm.train_steps=50

`--set` changes params.yaml in the clone (committed there, so `dvc exp run` starts from a clean tree);
the table lists every change. The stages DVC ran are read from its output ("Running stage ...").
"""

from __future__ import annotations

import argparse
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml
from common import append_results, command_line, describe_machine, markdown_table, set_threads, stopwatch

REPO = Path(__file__).resolve().parent.parent
VENV = REPO / ".venv"
STAGE_RUN = re.compile(r"Running stage '([^']+)'")
GIT_IDENTITY = {
    "GIT_AUTHOR_NAME": "synthmix bench",
    "GIT_AUTHOR_EMAIL": "bench@synthmix.invalid",
    "GIT_COMMITTER_NAME": "synthmix bench",
    "GIT_COMMITTER_EMAIL": "bench@synthmix.invalid",
}


class StepFailed(Exception):
    pass


def clone_env(clone: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VIRTUAL_ENV")}
    env.update(GIT_IDENTITY)
    env["PATH"] = f"{VENV / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = str(clone / "src")  # ahead of the editable install, which points at REPO/src
    env["HF_HUB_OFFLINE"] = "1"
    env["SYNTHMIX_QUIET"] = "1"
    return env


def run_step(args: list[str], clone: Path, env: dict[str, str], log: Path) -> tuple[float, list[str]]:
    """Run one command in the clone; seconds and the DVC stages it ran. Output goes to `log`."""
    with stopwatch() as t:
        result = subprocess.run(args, cwd=clone, env=env, capture_output=True, text=True)
    output = result.stdout + result.stderr
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(args)}  ({t():.1f} s, exit {result.returncode})\n{output}")
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-25:])
        raise StepFailed(f"`{shlex.join(args)}` failed (exit {result.returncode}):\n{tail}")
    return t(), STAGE_RUN.findall(output)


def set_params(clone: Path, settings: list[str]) -> None:
    """Apply dotted key=value settings to the clone's params.yaml (values parsed as YAML)."""
    path = clone / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for setting in settings:
        key, _, value = setting.partition("=")
        node = params
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="Change a params.yaml value in the clone, e.g. train.cnn.epochs=2.")  # fmt: skip
    parser.add_argument("--noop-repeats", type=int, default=3, help="No-op `dvc repro` runs (median kept).")
    parser.add_argument("--mix", default="15r30s", help="The mix of the `dvc exp run -S mix=...` step.")
    parser.add_argument("--keep", action="store_true", help="Keep the clone (its path is printed).")
    parser.add_argument("--no-append", action="store_true", help="Print only; leave RESULTS.md alone.")
    args = parser.parse_args()

    if not (VENV / "bin" / "dvc").exists():
        sys.exit(f"{VENV} has no dvc; run `make setup` in {REPO} first.")
    machine = describe_machine(set_threads(None))
    command = command_line()
    tmp = Path(tempfile.mkdtemp(prefix="synthmix-bench-pipeline-"))
    clone = tmp / "synthmix"
    log = tmp / "pipeline.log"
    rows: list[list[object]] = []
    try:
        subprocess.run(["git", "clone", "--quiet", str(REPO), str(clone)], check=True)
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
        (clone / ".venv").symlink_to(VENV)  # the Makefile's .venv, without a second install
        env = clone_env(clone)
        if args.settings:
            set_params(clone, args.settings)
            subprocess.run(["git", "commit", "--quiet", "-m", "bench settings", "params.yaml"],
                           cwd=clone, env=env, check=True)  # fmt: skip
        # -o: treat setup and its stamp as up to date, so make never reinstalls into the shared .venv.
        make = ["make", "-o", "setup", "-o", ".venv/.installed-stamp", "run"]
        seconds, stages = run_step(make, clone, env, log)
        rows.append(
            ["`make run` (fresh clone, embedded data, everything)", seconds, ", ".join(stages) or "none"]
        )
        noop = [run_step(["dvc", "repro"], clone, env, log) for _ in range(args.noop_repeats)]
        ran = sorted({s for _, stages in noop for s in stages})
        rows.append([f"no-op `dvc repro` (median of {args.noop_repeats})",
                     statistics.median(s for s, _ in noop), ", ".join(ran) or "none"])  # fmt: skip
        seconds, stages = run_step(["dvc", "exp", "run", "-S", f"mix={args.mix}"], clone, env, log)
        rows.append(
            [f"`dvc exp run -S mix={args.mix}` after the full repro", seconds, ", ".join(stages) or "none"]
        )
    except StepFailed as failure:
        print(f"{failure}\n\nFull log: {log}; clone kept at {clone}", file=sys.stderr)
        print(markdown_table(["step", "seconds", "stages run"], rows))
        sys.exit(1)
    finally:
        if not args.keep and rows and len(rows) == 3:
            shutil.rmtree(tmp, ignore_errors=True)
    full = rows[0][1]
    ratios = [[row[0], row[1], f"{row[1] / full:.2%}", row[2]] for row in rows]
    changes = ", ".join(f"`{s}`" for s in args.settings) or "none (the committed params.yaml)"
    body = f"""A fresh clone of commit {commit} (committed files only), this checkout's .venv on PATH. params.yaml
changes: {changes}. "share" is each step's time over the full `make run`'s.

{markdown_table(["step", "seconds", "share of full run", "stages DVC ran"], ratios)}
"""
    print(body)
    if args.keep:
        print(f"Clone kept at {clone}; log {log}")
    if not args.no_append:
        append_results("Pipeline: make run, no-op dvc repro, one-mix experiment", command, machine, body)


if __name__ == "__main__":
    main()
