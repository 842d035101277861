"""Several generators in one study: each its own synthetic set, mixes naming theirs, the report comparing
them; adding a generator generates only its images and trains only its mixes.

Every pipeline is the tiny random Stable Diffusion of tests/tiny_pipelines.py, loaded through the real
`from_pretrained(local_dir)` path: two text-to-image generators (other prompts, other guidance) and one
image-to-image generator, then a third text-to-image one added to params.yaml.
"""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from synthmix.cli import run
from synthmix.config.params import load_params
from synthmix.data.mixes import Mix
from synthmix.generate.manifest import read_synthetic_manifest
from synthmix.stages.generate import generate_stage
from synthmix.stages.train import read_study_data

pytestmark = pytest.mark.slow

MIXES = ["4r0s", "4r3s", "4r3s-sd_b", "4r3s-img"]


def _t2i(model: Path, **overrides) -> dict:
    settings = {"model": str(model), "steps": 2, "size": 16, "batch_size": 2, "guidance_scale": 2.0}
    return {"generator": "text2image", "text2image": {**settings, **overrides}}


def _params(tiny_sd: Path, mixes: list[str], **more_generators) -> dict:
    generators = {
        "sd_b": _t2i(
            tiny_sd,
            prompt_template="a drawing of a {label}",
            prompt_templates=["a sketch of a {label}"],
            guidance_scale=3.0,
        ),
        "img": _t2i(tiny_sd, mode="image", strength=0.5),
        **more_generators,
    }
    return {
        "data": {"train_per_class": 4, "test_per_class": 2, "extra_per_class": 0, "pool_per_class": 0},
        "generate": {"name": "sd_a", "images_per_class": 3, **_t2i(tiny_sd), "generators": generators},
        "study": {"mixes": mixes, "models": ["cnn"], "seeds": [0], "baseline": "4r0s"},
        "train": {"image_size": 32, "workers": 1, "cnn": {"epochs": 1}},
        "report": {"bootstrap_samples": 200},
    }


def _mtimes(paths) -> dict[Path, int]:
    return {p: p.stat().st_mtime_ns for p in paths}


def test_three_generators_in_one_study_then_a_fourth_generates_and_trains_only_its_own(
    in_tmp, image_tree, tiny_sd, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_tmp / 'mlflow.db'}")
    image_tree({"ankle_boot": 6, "b": 6}, root=in_tmp / "data")
    Path("params.yaml").write_text(yaml.safe_dump(_params(tiny_sd, MIXES)))
    assert run(["prepare"]) == 0
    assert run(["generate"]) == 0

    first, sd_b, img = (
        read_synthetic_manifest(p)
        for p in (
            Path("synthetic/manifest.csv"),
            Path("synthetic/@sd_b/manifest.csv"),
            Path("synthetic/@img/manifest.csv"),
        )
    )
    assert [len(rows) for rows in (first, sd_b, img)] == [6, 6, 6]
    assert all(r.path.parts[:2] == ("synthetic", "@sd_b") for r in sd_b)
    # every image's prompt, seed, guidance, strength and model identity, in its own row
    assert [r.prompt for r in sd_b if r.label == "ankle_boot"] == [
        "a drawing of a ankle boot",
        "a sketch of a ankle boot",
        "a drawing of a ankle boot",
    ]
    assert {r.guidance for r in sd_b} == {3.0} and {r.guidance for r in first} == {2.0}
    assert {r.model_id for r in first + sd_b + img} == {str(tiny_sd)}
    hashes = {r.model_hash for r in first + sd_b + img}
    assert len(hashes) == 1 and len(hashes.pop()) == 64
    assert {r.strength for r in img} == {0.5} and {r.strength for r in first} == {None}
    assert all(r.source_path is not None and r.source_path.parts[0] == "data" for r in img)
    assert len({r.seed for r in first}) == 6
    assert Path("samples/@sd_b/grid.png").exists() and Path("samples/grid.png").exists()

    params = load_params("params.yaml")
    study = read_study_data(params, [Mix.parse(m) for m in MIXES], [0])
    taken = {
        mix.name: {t.path.parts[1] for t in images if t.source == "synthetic"}
        for (mix, _), images in study.training.items()
    }
    assert taken == {"4r0s": set(), "4r3s": {"ankle_boot", "b"}, "4r3s-sd_b": {"@sd_b"}, "4r3s-img": {"@img"}}

    assert run(["train"]) == 0
    done = sorted(Path("runs/cnn").glob("*/seed0/DONE"))
    assert sorted(p.parent.parent.name for p in done) == sorted(MIXES)

    # A third text-to-image generator and its mix: only its images are made and only its mix trained.
    pngs = sorted(Path("synthetic").rglob("*.png"))
    before = _mtimes([*pngs, *done])
    more = {"sd_c": _t2i(tiny_sd, guidance_scale=4.0, negative_prompt="blurry")}
    Path("params.yaml").write_text(yaml.safe_dump(_params(tiny_sd, [*MIXES, "4r3s-sd_c"], **more)))
    summaries = {s.name: s for s in generate_stage(load_params("params.yaml"))}
    assert {n: (s.generated, s.reused) for n, s in summaries.items()} == {
        "sd_a": (0, 6),
        "sd_b": (0, 6),
        "img": (0, 6),
        "sd_c": (6, 0),
    }
    assert {r.negative_prompt for r in read_synthetic_manifest(Path("synthetic/@sd_c/manifest.csv"))} == {
        "blurry"
    }
    assert run(["train"]) == 0
    assert _mtimes(before) == before  # no image remade, no run retrained
    assert Path("runs/cnn/4r3s-sd_c/seed0/DONE").exists()

    assert run(["report"]) == 0
    report = " ".join(Path("reports/report.md").read_text().split())
    assert "## Generators" in report and "4r3s-sd_b vs 4r3s" in report and "4r3s-sd_c vs 4r3s" in report
    assert "Synthetic set 'sd_c': generator text2image" in report
    with open("reports/figures/headline.csv", newline="") as fh:
        assert {row["mix"] for row in csv.DictReader(fh)} == {*MIXES, "4r3s-sd_c"}


def test_a_mix_naming_an_unknown_generator_exits_2_naming_the_key(in_tmp, capsys):
    Path("params.yaml").write_text(yaml.safe_dump({"study": {"mixes": ["30r0s", "30r15s-sdxl"]}}))
    assert run(["check-params"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "study.mixes[1] is '30r15s-sdxl'" in err and "no generator 'sdxl' in generate.generators" in err


# --- a generator fine-tuned with LoRA ----------------------------------------------------------------

TINY_LORA = {"rank": 2, "train_steps": 4, "batch_size": 2, "learning_rate": 0.01, "checkpoint_every": 2}


def test_a_lora_generator_fine_tunes_on_the_pool_and_makes_other_images_than_its_base(
    in_tmp, image_tree, tiny_sd, monkeypatch
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_tmp / 'mlflow.db'}")
    image_tree({"ankle_boot": 8, "b": 8}, root=in_tmp / "data")
    params = _params(
        tiny_sd,
        ["4r0s", "4r3s", "4r3s-tuned"],
        tuned={**_t2i(tiny_sd), "generator": "lora", "lora": TINY_LORA},
    )
    params["data"]["pool_per_class"] = 2  # the fine-tune learns from these, never from train or test
    del params["generate"]["generators"]["sd_b"], params["generate"]["generators"]["img"]
    Path("params.yaml").write_text(yaml.safe_dump(params))
    assert run(["prepare"]) == 0
    assert run(["generate"]) == 0

    base, tuned = (
        read_synthetic_manifest(p)
        for p in (Path("synthetic/manifest.csv"), Path("synthetic/@tuned/manifest.csv"))
    )
    assert {(r.generator, r.learned_from) for r in tuned} == {("lora", "pool")}
    assert all("+lora:" in r.revision for r in tuned) and {r.model_hash for r in tuned} == {
        r.model_hash for r in base
    }
    assert [r.seed for r in tuned] == [r.seed for r in base]  # same seeds and prompts: the adapter differs
    assert all(a.sha256 != b.sha256 for a, b in zip(base, tuned, strict=True))
    assert Path("models/lora/@tuned/final/lora.safetensors").exists()
    assert Path("samples/@tuned/grid.png").exists()

    # a rerun reuses the adapter: nothing fine-tuned, nothing generated
    final = Path("models/lora/@tuned/final/lora.safetensors").stat().st_mtime_ns
    summaries = {s.name: s for s in generate_stage(load_params("params.yaml"))}
    assert summaries["tuned"].generated == 0 and summaries["tuned"].reused == 6
    assert Path("models/lora/@tuned/final/lora.safetensors").stat().st_mtime_ns == final


def test_an_interrupted_lora_fine_tune_resumes_to_the_uninterrupted_adapter(tmp_path, tiny_sd):
    import numpy as np
    from diffusers import AutoPipelineForText2Image
    from safetensors.torch import load_file

    from synthmix.config.params import LoRAConfig
    from synthmix.generate import lora

    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(4, 16, 16, 3), dtype=np.uint8)
    prompts = ["a cat", "a cat", "a dog", "a dog"]

    steps_run: list[int] = []  # the steps each fine-tune trained

    def finetune(root: Path, stop_at: int | None = None) -> dict:
        pipe = AutoPipelineForText2Image.from_pretrained(tiny_sd)
        cfg = LoRAConfig(**{**TINY_LORA, "checkpoint_dir": root})
        steps_run.clear()

        def interrupt(step: int) -> None:
            steps_run.append(step)
            if step == stop_at:
                raise KeyboardInterrupt

        try:
            final = lora.finetune(pipe, cfg, images, prompts, 0, "fp", on_step=interrupt)
        except KeyboardInterrupt:
            return {}
        return load_file(final / lora.ADAPTER_FILE)

    whole = finetune(tmp_path / "whole")
    assert finetune(tmp_path / "cut", stop_at=3) == {}
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == ["checkpoint-2"]
    resumed = finetune(tmp_path / "cut")
    assert steps_run == [3, 4]  # resumed after checkpoint-2, not trained from scratch
    assert whole.keys() == resumed.keys() and len(whole) > 0
    assert all(np.array_equal(whole[k].numpy(), resumed[k].numpy()) for k in whole)
    assert any(float(v.abs().sum()) > 0 for k, v in whole.items() if "lora_B" in k)  # it learnt something
