"""The train stage end to end: the real CLI on a tiny tree, MLflow, resuming, errors before work."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from conftest import write_image
from synthmix.cli import run
from synthmix.runs import rundir, tracking


@pytest.fixture(autouse=True)
def _no_imagenet(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))


# --- the train stage end to end: the real CLI on a tiny tree ---------------------------------------


def _tiny_project(root, image_tree, use_tuned=False):
    """A 3-class real set split 4/3, a 3-image-per-class synthetic set with its manifest, params.yaml."""
    import yaml

    from synthmix.core.files import sha256_file
    from synthmix.data.split import SplitSizes, prepare_split
    from synthmix.generate.manifest import SyntheticRow, write_synthetic_manifest

    image_tree({"ant": 7, "bee": 7, "cow": 7}, root=root / "data")
    prepare_split(Path("data"), Path("prepared"), SplitSizes(4, 3), seed=0)
    synthetic = []
    for label in ("ant", "bee", "cow"):
        for index in range(6):  # a block of 3 a class for each of the two seeds (generator_seed redrawn)
            path = write_image(Path("synthetic") / label / f"{index:04d}.png", seed=100 + index)
            synthetic.append(
                SyntheticRow(path, label, index, index, "test", "none", "", "", 0, 0.0, 0, sha256_file(path))
            )
    write_synthetic_manifest(synthetic, Path("synthetic/manifest.csv"))
    params = {
        "mix": "3r3s",
        "data": {"train_per_class": 4, "test_per_class": 3},
        "generate": {"images_per_class": 3},
        "study": {"mixes": ["3r0s", "3r3s", "0r3s"], "baseline": "3r0s", "seeds": [0, 1]},
        "train": {
            "image_size": 32,
            "batch_size": 4,
            "use_tuned": use_tuned,
            "cnn": {"epochs": 2},
            "resnet50": {"epochs": 2, "weights": "auto"},
        },
    }
    Path("params.yaml").write_text(yaml.safe_dump(params))


def _test_pixels() -> np.ndarray:
    """The test split's images as the models take them, in predictions.csv's order (sorted by path)."""
    from synthmix.data.real import decode_array, read_manifest

    rows = sorted(read_manifest(Path("prepared/test.csv")), key=lambda r: r.path.as_posix())
    return np.stack([decode_array(r.path, 32).transpose(2, 0, 1) for r in rows]).astype(np.float32)


@pytest.fixture
def tiny_project(in_tmp, image_tree, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_tmp / 'm.db'}")
    _tiny_project(in_tmp, image_tree)
    return in_tmp


@pytest.mark.slow
def test_train_command_writes_runs_logs_mlflow_and_resumes(tiny_project, capsys):
    import mlflow

    assert run(["train"]) == 0
    run_dirs = sorted(Path("runs").glob("*/*/*"))
    # 2 models x (the selected mix 3r3s + the baseline 3r0s) x 2 seeds
    assert [d.relative_to("runs").as_posix() for d in run_dirs] == [
        f"{m}/{x}/seed{s}" for m in ("cnn", "resnet50") for x in ("3r0s", "3r3s") for s in (0, 1)
    ]
    for d in run_dirs:
        assert {p.name for p in d.iterdir()} == {rundir.RUN_JSON, *rundir.RESULT_FILES, rundir.DONE}
    info = json.loads(Path("runs/resnet50/3r3s/seed1/run.json").read_text())
    assert (
        info["weights"] == "random"
        and info["train_images"] == 18
        and info["classes"] == ["ant", "bee", "cow"]
    )
    assert len(Path("runs/cnn/3r3s/seed0/predictions.csv").read_text().splitlines()) == 1 + 9
    summary = json.loads(Path("metrics_detail.json").read_text())
    assert set(json.loads(Path("metrics.json").read_text())["f1_macro"]["cnn"]) == {"3r0s", "3r3s"}
    assert set(summary["cnn"]) == {"3r0s", "3r3s"} and summary["cnn"]["3r3s"]["seeds"] == 2
    assert Path("plots/curves/resnet50-3r3s.csv").exists() and Path("plots/mixes.csv").exists()

    client = mlflow.tracking.MlflowClient()
    runs = client.search_runs(client.get_experiment_by_name("synthmix").experiment_id)
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    assert len(children) == 8 and len(runs) == 9
    child = client.get_run(info["mlflow_run_id"])
    tags = child.data.tags
    assert (
        tags[tracking.MODEL] == "resnet50"
        and tags[tracking.MIX] == "3r3s"
        and tags[tracking.STAGE] == "train"
    )
    assert tags[tracking.SEED] == "1" and tags[tracking.WEIGHTS] == "random"
    parent = client.get_run(info["mlflow_parent_run_id"]).data.tags
    assert parent[tracking.SWEEP] == "true"
    assert {tracking.GIT_COMMIT, tracking.DATA_MD5, tracking.SYNTHETIC_MANIFEST_SHA256} <= set(parent)
    assert (
        client.get_experiment_by_name("synthmix").tags["mlflow.experimentKind"] == "custom_model_development"
    )
    assert child.data.params["hp.lr"] == "0.001" and child.data.params["train.image_size"] == "32"
    # where it ran: in run.json and as MLflow params, on the run and its stage's parent run
    import torch

    environment = info["environment"]
    assert (environment["device"], environment["dtype"], environment["gpu"]) == ("cpu", "float32", "cpu")
    assert {"torch", "torchvision", "diffusers", "transformers", "timm"} <= set(environment)
    assert rundir.read_run(Path("runs/resnet50/3r3s/seed1")).record.environment == environment
    for logged in (child, client.get_run(info["mlflow_parent_run_id"])):
        assert logged.data.params["device"] == "cpu" and logged.data.params["gpu"] == "cpu"
        assert logged.data.params["dtype"] == "float32"
        assert logged.data.params["version.torch"] == environment["torch"]
    assert environment["torch"] in torch.__version__
    assert not any(key.startswith("system/") for key in child.data.metrics)  # system metrics: CUDA only
    assert [m.step for m in client.get_metric_history(child.info.run_id, "test_accuracy")] == [1, 2]
    assert "final_f1_macro" in child.data.metrics
    assert child.inputs.dataset_inputs[0].dataset.name == "train-3r3s"
    artifacts = {a.path for a in client.list_artifacts(child.info.run_id, "results")}
    assert "results/predictions.csv" in artifacts and "results/confusion.csv" in artifacts
    # Each logged model loads back and predicts what the run predicted. A frozen-backbone run logs its
    # head and the backbone's identity, not a copy of the backbone.
    test_images = _test_pixels()
    for run_dir in (Path("runs/resnet50/3r3s/seed1"), Path("runs/cnn/3r3s/seed0")):
        record = rundir.read_run(run_dir)
        loaded = mlflow.pyfunc.load_model(f"runs:/{record.mlflow_run_id}/model")
        logits = np.asarray(loaded.predict(test_images))
        predicted = [record.classes[i] for i in logits.argmax(1)]
        expected = rundir.read_predictions(record)
        assert predicted == [record.classes[i] for i in expected.predicted]
    stored = sum(
        p.stat().st_size for d in ("mlruns", "mlartifacts") for p in Path(d).rglob("*") if p.is_file()
    )
    assert 0 < stored < 20_000_000  # 8 runs, no 94 MB ResNet50 pickle in any of them

    # Resume: nothing is retrained; a new mix trains only that mix; a changed setting retrains.
    before = Path("runs/cnn/3r3s/seed0/run.json").stat().st_mtime_ns
    assert run(["train"]) == 0
    assert Path("runs/cnn/3r3s/seed0/run.json").stat().st_mtime_ns == before
    assert "Trained 0 run(s), 8 already finished" in capsys.readouterr().err.replace("\n", " ")
    assert run(["train", "--model", "cnn", "--mix", "0r3s", "--seed", "0"]) == 0
    assert "Trained 1 run(s), 1 already finished" in capsys.readouterr().err.replace("\n", " ")
    assert Path("runs/cnn/3r3s/seed0/run.json").stat().st_mtime_ns == before


@pytest.mark.slow
def test_an_interrupted_run_is_redone(tiny_project, capsys):
    assert run(["train", "--model", "cnn", "--seed", "0"]) == 0
    (Path("runs/cnn/3r3s/seed0") / "DONE").unlink()  # as if killed before finishing
    assert run(["train", "--model", "cnn", "--seed", "0"]) == 0
    assert "Trained 1 run(s), 1 already finished" in capsys.readouterr().err.replace("\n", " ")
    assert (Path("runs/cnn/3r3s/seed0") / "DONE").exists()


@pytest.mark.parametrize(
    "args,message",
    [
        (["--model", "vgg"], "Unknown model 'vgg'"),
        (["--mix", "3r9s"], "9 synthetic images per class"),
        (["--mix", "9r0s"], "Mix 9r0s cannot run: it needs 5 real images a class beyond the 4 training"),
        (["--mix", "40r0s"], "40 real training images per class"),
        (["--mix", "3x"], "malformed"),
    ],
)
def test_unknown_model_or_infeasible_mix_exits_2_before_any_work(tiny_project, capsys, args, message):
    assert run(["train", *args]) == 2
    assert message in capsys.readouterr().err.replace("\n", " ")
    assert not Path("runs").exists() and not Path("m.db").exists()


def test_imagenet_weights_offline_exit_2_naming_the_file_before_any_work(tiny_project, capsys, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    params = Path("params.yaml").read_text().replace("weights: auto", "weights: imagenet")
    Path("params.yaml").write_text(params)
    assert run(["train", "--model", "resnet50"]) == 2
    assert "resnet50-0676ba61.pth" in capsys.readouterr().err.replace("\n", "")
    assert not Path("runs").exists()


def test_use_tuned_without_tuned_entry_says_which_tune_to_run(tiny_project, capsys):
    Path("params.yaml").write_text(
        Path("params.yaml").read_text().replace("use_tuned: false", "use_tuned: true")
    )
    Path("tuned").mkdir()
    Path("tuned/best_params.yaml").write_text("cnn:\n  3r0s: {lr: 0.01, epochs: 1}\n")
    assert run(["train", "--model", "cnn", "--seed", "0"]) == 2
    assert "synthmix tune --model cnn --mix 3r3s" in capsys.readouterr().err.replace("\n", " ")
    assert not Path("runs").exists()


def test_controls_train_like_any_mix_and_a_mix_the_data_cannot_serve_is_skipped(tiny_project):
    import yaml

    params = yaml.safe_load(Path("params.yaml").read_text())
    params["mix"] = "all"
    params["study"]["mixes"] = ["3r0s", "3r3a", "3r0s+aug", "3r3s", "5r0s"]
    params["train"]["budget"] = "steps"
    Path("params.yaml").write_text(yaml.safe_dump(params))
    with pytest.warns(UserWarning, match=r"Mix 5r0s is skipped: it needs 1 real images a class beyond"):
        assert run(["train", "--model", "cnn"]) == 0
    records = {
        m: rundir.read_run(Path(f"runs/cnn/{m}/seed0")).record for m in ("3r0s", "3r3a", "3r0s+aug", "3r3s")
    }
    assert not Path("runs/cnn/5r0s").exists()
    copies = records["3r3a"]
    assert (copies.real_images, copies.augmented_images, copies.train_images) == (9, 9, 18)
    assert "RandAugment" in copies.augmentation and "RandAugment" in records["3r0s+aug"].augmentation
    assert records["3r0s"].augmentation == "" and records["3r3s"].augmentation == ""
    # compute-matched: every mix takes the baseline's 2 epochs x ceil(9 / 4) batches
    assert {r.optimizer_steps for r in records.values()} == {6} and {r.budget for r in records.values()} == {
        "steps"
    }
    # each replicate draws its own copies: the two seeds' 3r3a runs trained on different images
    assert rundir.read_run(Path("runs/cnn/3r3a/seed1")).record.fingerprint != copies.fingerprint


def test_a_step_budget_matches_the_baseline_run_with_the_same_hyperparameters():
    from synthmix.config.hparams import Hyperparameters
    from synthmix.config.params import params_from_dict
    from synthmix.data.mixes import Mix
    from synthmix.stages.train import RunSpec, StudyData, with_step_budgets

    params = params_from_dict({"train": {"budget": "steps"}})
    fixed = Hyperparameters(lr=0.001, weight_decay=0.0, epochs=10, batch_size=32, dropout=0.0)
    tuned = Hyperparameters(lr=0.001, weight_decay=0.0, epochs=4, batch_size=16, dropout=0.0)
    baseline, larger = Mix(30, 0), Mix(30, 30)
    specs = [
        RunSpec("cnn", m, 0, hp, source)
        for hp, source in ((fixed, "fixed"), (tuned, "tuned"))
        for m in (baseline, larger)
    ]
    images = {(baseline, 0): [None] * 300, (larger, 0): [None] * 600}  # 10 classes x 30 / x 60
    budgets = {
        (s.mix, s.source): s.max_steps for s in with_step_budgets(specs, StudyData((), (), images), params)
    }
    # fixed: 10 epochs x ceil(300 / 32) = 100 steps; tuned: its own baseline run, 4 x ceil(300 / 16) = 76
    assert budgets == {
        (baseline, "fixed"): 100,
        (larger, "fixed"): 100,
        (baseline, "tuned"): 76,
        (larger, "tuned"): 76,
    }
