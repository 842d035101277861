"""The quality stage on a tiny hand-made study: which images each automatic filter rejects, what a
@filtered mix then leaves out, the quality tables it writes, and CLIP scoring with a tiny local CLIP."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synthmix.cli import run as cli_run
from synthmix.config.params import params_from_dict
from synthmix.core.files import sha256_file
from synthmix.data.mixes import Draw, Mix, training_images
from synthmix.data.real import SplitRow, write_manifest
from synthmix.data.vetting import left_out_by_mix, read_filter_rows
from synthmix.generate.manifest import SyntheticRow, write_synthetic_manifest
from synthmix.quality.files import METRICS_PATH, read_quality
from synthmix.stages.quality import quality_stage

CLASSES = ("bar_top", "bar_mid", "bar_low")


def _pattern(c: int, rng: np.random.Generator) -> np.ndarray:
    """A class is a bright horizontal bar at its own height over noise: easy for a small CNN."""
    pixels = rng.integers(0, 60, size=(16, 16), dtype=np.uint8)
    pixels[1 + c * 5 : 4 + c * 5, 1:15] = 230
    return pixels


def _save(pixels: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels, "L").convert("RGB").save(path)
    return path


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, object]:
    """prepared/ (10 training and 4 test images a class) and synthetic/ (6 a class): 4 faithful ones, then
    index 4 shows another class's bar (bar_top's shows bar_low's), index 5 is blank; plus a blocked one
    and a near-copy of a test image in bar_mid, and an exact copy of a training image in bar_low."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    rng = np.random.default_rng(0)
    for split, count in (("train", 10), ("test", 4)):
        rows = []
        for c, label in enumerate(CLASSES):
            for r in range(count):
                path = _save(_pattern(c, rng), Path(f"data/{label}/{split}{r:02d}.png"))
                rows.append(SplitRow(path, label, sha256_file(path), split, r))
        write_manifest(rows, Path(f"prepared/{split}.csv"))
    synthetic = []
    for c, label in enumerate(CLASSES):
        for i in range(8):
            if i == 4:
                pixels = _pattern((c + 2) % 3, rng)  # another class's bar
            elif i == 5:
                pixels = np.full((16, 16), 90, dtype=np.uint8)  # blank
            elif label == "bar_low" and i == 6:
                pixels = np.asarray(Image.open(f"data/{label}/train03.png").convert("L"))  # a copy
            else:
                pixels = _pattern(c, rng)
            path = _save(pixels, Path(f"synthetic/{label}/{i:04d}.png"))
            blocked = label == "bar_mid" and i == 7
            near = Path("data/bar_mid/test00.png") if label == "bar_mid" and i == 6 else None
            synthetic.append(
                SyntheticRow(
                    path,
                    label,
                    i,
                    i,
                    "ddpm",
                    "m",
                    "",
                    "",
                    1,
                    1.0,
                    0,
                    sha256_file(path),
                    blocked,
                    near_test_path=near,
                    near_test_similarity=0.9991 if near else None,
                )
            )
    write_synthetic_manifest(synthetic, Path("synthetic/manifest.csv"))
    raw = {
        "data": {"train_per_class": 10, "test_per_class": 4},
        "generate": {"images_per_class": 8},
        "study": {"mixes": ["10r0s", "10r4s", "10r4s@filtered"], "baseline": "10r0s", "seeds": [0]},
        "train": {
            "image_size": 32,
            "cnn": {"epochs": 40},
            "batch_size": 8,
            "cache_dir": str(tmp_path / "cache"),
        },
        "quality": {
            "clip_score": {"model": "no-such-org/no-such-clip"},
            "kid_subsets": 10,
            "bootstrap_samples": 100,
            "closest_pairs": 3,
        },
    }
    return {"raw": raw, "synthetic": synthetic}


def _rows_by_key(rows):
    return {(r.label, r.index): r for r in rows}


def test_each_filter_rejects_its_kind_of_image_and_a_filtered_mix_leaves_them_out(study):
    params = params_from_dict(study["raw"])
    result = quality_stage(params, log_to_mlflow=False)

    rows = _rows_by_key(read_filter_rows(Path("quality/filters.csv")))
    assert len(rows) == 24
    assert "classifier" in rows[("bar_top", 4)].rejected_by
    assert rows[("bar_top", 4)].predicted == "bar_low"  # it shows bar_low's bar
    for label in CLASSES:
        assert "blank" in rows[(label, 5)].rejected_by
        assert rows[(label, 5)].pixel_std < 4.0
        assert all(not rows[(label, i)].rejected_by for i in range(4)), "faithful images are kept"
    assert rows[("bar_mid", 7)].rejected_by[0] == "blocked"
    assert "near_test" in rows[("bar_mid", 6)].rejected_by
    assert not rows[("bar_mid", 6)].filtered_out  # left out of every mix already, not by a filter

    # a @filtered mix leaves out exactly what a quality filter rejected, and takes the next images
    mix = Mix(10, 4, vetting="filtered")
    out = left_out_by_mix([mix], "ddpm", Path("quality/filters.csv"))[mix]
    assert out == {r.sha256 for r in rows.values() if r.filtered_out}
    real = [
        SplitRow(Path(f"data/{c}/train{r:02d}.png"), c, f"{c}{r}", "train", r)
        for c in CLASSES
        for r in range(10)
    ]
    taken = training_images(real, study["synthetic"], Mix(10, 6, vetting="filtered"), Draw(), out)
    top = [t.path.name for t in taken if t.source == "synthetic" and t.label == "bar_top"]
    assert top == ["0000.png", "0001.png", "0002.png", "0003.png", "0006.png", "0007.png"]

    # the status of each filter, and CLIP's reason for not running
    status = {f.name: f for f in result.summary.filters}
    assert status["classifier"].applied and status["blank"].applied
    assert not status["clip_score"].applied and "no-such-org/no-such-clip" in status["clip_score"].reason
    assert all(r.clip_score is None for r in rows.values())


def test_the_quality_tables_name_their_feature_space_and_find_the_copied_image(study):
    params = params_from_dict(study["raw"])
    quality_stage(params, log_to_mlflow=False)
    summary = read_quality(Path("quality/quality.json"))
    assert summary.feature_space.name == "reference"  # no ImageNet weights on a test machine
    assert "real training images only" in summary.feature_space.description
    assert summary.reference_accuracy > 0.9
    (ddpm,) = summary.generators
    assert set(ddpm.classes) == set(CLASSES)
    assert ddpm.classes["bar_top"].n_real == 10 and ddpm.classes["bar_top"].n_fake == 8
    assert ddpm.classes["bar_mid"].n_fake == 7  # the blocked image is not measured
    assert ddpm.classes["bar_top"].kid is not None and ddpm.classes["bar_top"].kid_interval is not None
    closest = ddpm.closest[0]
    assert (closest.synthetic, closest.real, closest.real_split) == (
        Path("synthetic/bar_low/0006.png"),
        Path("data/bar_low/train03.png"),
        "train",
    )
    assert closest.distance < 1e-6
    metrics = json.loads(METRICS_PATH.read_text())
    assert set(metrics) == {"ddpm"}
    assert metrics["ddpm"]["filters_kept"] == pytest.approx(
        sum(not r.rejected_by for r in read_filter_rows(Path("quality/filters.csv"))) / 24
    )
    nearest = Path("quality/nearest.csv").read_text().splitlines()
    assert len(nearest) == 1 + 23 and nearest[0].startswith("generator,label,path,train_path")


def test_clip_scores_every_image_when_a_local_clip_model_is_there(study, tiny_clip):
    raw = study["raw"]
    raw["quality"]["clip_score"] = {"model": str(tiny_clip), "min_score": 1.0}  # nothing scores 1
    result = quality_stage(params_from_dict(raw), log_to_mlflow=False)
    assert {f.name: f.applied for f in result.summary.filters}["clip_score"]
    rows = read_filter_rows(Path("quality/filters.csv"))
    assert all(r.clip_score is not None and -1 <= r.clip_score <= 1 for r in rows)
    assert all("clip_score" in r.rejected_by for r in rows)


def test_a_missing_synthetic_set_is_a_clear_user_error(study, capsys):
    os.remove("synthetic/manifest.csv")
    Path("params.yaml").write_text(json.dumps(study["raw"]))  # JSON is YAML
    assert cli_run(["quality"]) == 2
    err = capsys.readouterr().err
    assert "synthetic/manifest.csv does not exist" in err and "synthmix generate" in err
    assert "Traceback" not in err


def test_the_stage_logs_its_numbers_and_tables_to_mlflow(study, monkeypatch, tmp_path):
    import mlflow

    from synthmix.runs import tracking

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    result = quality_stage(params_from_dict(study["raw"]))
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'm.db'}")
    run = client.get_run(result.mlflow_run_id)
    assert run.info.status == "FINISHED" and run.data.tags[tracking.STAGE] == "quality"
    assert run.data.metrics["quality.ddpm.kid"] == pytest.approx(result.summary.generators[0].overall.kid)
    assert 0 < run.data.metrics["quality.ddpm.filters_kept"] < 1
    assert run.data.params["quality.classifier.min_confidence"] == "0.5"
    logged = {a.path for a in client.list_artifacts(run.info.run_id, "quality")}
    assert {"quality/filters.csv", "quality/quality.json", "quality/nearest.csv"} <= logged


def test_resnet50_weights_on_the_machine_make_its_features_the_feature_space(study, tmp_path):
    """With a ResNet50 state-dict file (standing in for ImageNet weights), auto measures in its pooled
    features, the same ones the train stage caches; without weights, asking for resnet50 is an error."""
    import torch
    import torchvision

    from synthmix.core.errors import UserError

    torch.manual_seed(0)
    weights = tmp_path / "resnet50.pth"
    torch.save(torchvision.models.resnet50().state_dict(), weights)
    raw = study["raw"]
    raw["train"]["resnet50"] = {"weights": str(weights)}
    result = quality_stage(params_from_dict(raw), log_to_mlflow=False)
    assert result.summary.feature_space.name == "resnet50"
    assert str(weights) in result.summary.feature_space.description
    cached = list((tmp_path / "cache" / "features").rglob("*.npy"))
    images = {sha256_file(path) for path in [*Path("data").rglob("*.png"), *Path("synthetic").rglob("*.png")]}
    assert len(cached) == len(images)  # each distinct image once, where the train stage looks for it
    assert result.summary.generators[0].classes["bar_top"].kid is not None

    raw["train"]["resnet50"] = {"weights": "none"}
    raw["quality"]["feature_space"] = "resnet50"
    with pytest.raises(UserError, match=r"quality\.feature_space is resnet50"):
        quality_stage(params_from_dict(raw), log_to_mlflow=False)
