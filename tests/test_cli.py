"""The command line as a user meets it: exit codes and messages, never tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from synthmix.cli import run

SMALL_STUDY = {"mixes": ["3r0s", "3r3s"], "baseline": "3r0s"}


def _params(path: Path, **overrides) -> Path:
    path.write_text(yaml.safe_dump(overrides))
    return path


def _synthmix(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "synthmix", *args], cwd=cwd, capture_output=True, text=True)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"mix": "30x"}, "malformed"),
        ({"mix": "75r30s"}, "75 real training images per class"),
        ({"study": {"mixes": ["30r0s", "30r99s"]}}, "99 synthetic"),
    ],
)
def test_bad_mix_exits_2_with_a_message_and_no_traceback(in_tmp, overrides, message):
    _params(in_tmp / "params.yaml", **overrides)
    result = _synthmix("check-params", cwd=in_tmp)
    assert result.returncode == 2
    assert message in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_too_few_images_in_a_class_exits_2_naming_the_class(in_tmp, image_tree, capsys):
    image_tree({"full": 8, "thin class": 2}, root=in_tmp / "data")
    _params(in_tmp / "params.yaml", data={"train_per_class": 4, "test_per_class": 4}, study=SMALL_STUDY)
    assert run(["prepare"]) == 2
    err = capsys.readouterr().err
    assert "thin class" in err and "has 2" in err
    assert not (in_tmp / "prepared" / "train.csv").exists()  # nothing half-written


def test_prepare_writes_manifests_and_the_rejection_report(in_tmp, image_tree):
    image_tree({"a": 5, "b": 5}, root=in_tmp / "data")
    (in_tmp / "data" / "a" / "broken.png").write_bytes(b"\x89PNG\r\n")
    _params(in_tmp / "params.yaml", data={"train_per_class": 3, "test_per_class": 2}, study=SMALL_STUDY)
    assert run(["prepare"]) == 0
    assert len((in_tmp / "prepared" / "train.csv").read_text().splitlines()) == 1 + 6
    assert "broken.png" in (in_tmp / "prepared" / "rejected.csv").read_text()


def test_missing_data_folder_says_how_to_get_data(in_tmp, capsys):
    assert run(["prepare"]) == 2
    err = capsys.readouterr().err
    assert "synthmix data default" in err and "synthmix data import" in err


def test_data_import_tracks_the_set_with_dvc(in_tmp, image_tree):
    subprocess.run(["git", "init", "-q"], check=True)
    subprocess.run([Path(sys.executable).with_name("dvc"), "init", "-q"], check=True)
    source = image_tree({"cat": 3, "dog": 3}, root=in_tmp / "download" / "animals" / "animals")
    (source / "cat" / "empty.jpg").write_bytes(b"")
    assert run(["data", "import", str(in_tmp / "download")]) == 0
    assert sorted(p.name for p in (in_tmp / "data").iterdir()) == ["cat", "dog"]
    assert "md5" in (in_tmp / "data.dvc").read_text()
    assert "empty.jpg,empty file" in (in_tmp / "logs" / "import_report.csv").read_text()


def test_import_names_each_class_the_split_cannot_serve_with_its_count_and_what_the_split_needs(
    in_tmp, image_tree
):
    """A 5-image class is reported at import, not first at prepare; the import itself still succeeds."""
    image_tree({"cat": 12, "owl": 11, "dog": 9, "bat": 5}, root=in_tmp / "download" / "animals")
    data = {"train_per_class": 4, "test_per_class": 4, "extra_per_class": 2, "pool_per_class": 2}
    _params(in_tmp / "params.yaml", data=data, study={"mixes": ["4r0s", "4r4s", "6r0s"], "baseline": "4r0s"})
    result = _synthmix("data", "import", "--no-dvc", str(in_tmp / "download"), cwd=in_tmp)
    assert result.returncode == 0, result.stderr
    out = " ".join(result.stderr.split())  # messages go to stderr, like every command's
    assert "Images per class: bat 5, dog 9, owl 11, cat 12." in out
    assert (
        "Class 'bat' has 5 images; the split needs 8 (data.train_per_class 4 + data.test_per_class 4)" in out
    )
    assert "prepare will stop on it" in out
    assert "Class 'dog' has 9 images; the extra-real control needs 10" in out and "6r0s" in out
    assert "Class 'owl' has 11 images; the generator's pool needs 12" in out
    assert "Class 'cat'" not in out  # served in full
    assert len(list((in_tmp / "data" / "bat").iterdir())) == 5


def test_every_dvc_stage_runs_a_cli_command_that_exists_and_has_help():
    # The commands a user and dvc.yaml rely on are registered (not just mentioned in the tool's blurb).
    import typer.main

    from synthmix.cli import app

    group = typer.main.get_command(app)
    commands = set(group.commands)
    assert commands == {
        "data",
        "prepare",
        "generate",
        "tune",
        "train",
        "report",
        "model-summary",
        "check-params",
        "review",
        "quality",
    }
    stages = yaml.safe_load((Path(__file__).resolve().parents[1] / "dvc.yaml").read_text())["stages"]
    for name, stage in stages.items():
        words = stage["cmd"].split()
        assert words[0] == "synthmix" and words[1] in commands, f"stage {name} runs an unknown command"
    for command in sorted(commands - {"data"}):
        result = _synthmix(command, "--help", cwd=Path.cwd())
        assert result.returncode == 0, result.stderr
        first_line = (group.commands[command].help or "").strip().splitlines()[0]
        assert first_line[:40] in " ".join(result.stdout.split()), command


def test_an_unknown_option_is_a_usage_error_not_a_traceback(in_tmp, capsys):
    assert run(["train", "--bogus"]) == 2
    err = capsys.readouterr().err
    assert "No such option: --bogus" in err and "Traceback" not in err
