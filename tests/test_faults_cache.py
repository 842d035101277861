"""Every cache checks what it reads: a damaged entry (cut short by a full disk or a killed writer, or
not what it should hold) is rebuilt with one warning naming it, and gives what a clean run gives."""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from torch import nn

from conftest import write_image
from synthmix.cli import run
from synthmix.config.params import DDPMConfig
from synthmix.core.errors import UserError
from synthmix.core.files import sha256_file
from synthmix.data.images import LabelledImages, cached_image_path, load_images
from synthmix.data.real import decode_array, read_manifest
from synthmix.generate.ddpm import FINAL_DIR, train_ddpm
from synthmix.generate.manifest import ImageRecord, read_record
from synthmix.generate.manifest import write_image as write_synthetic
from synthmix.models import FrozenBackboneClassifier, PixelScaling
from synthmix.train.features import backbone_features, cached_feature_path
from test_generate import TINY_DDPM, _project
from test_train import _tiny_project


def _truncate(path: Path) -> None:
    """What a full disk or a writer killed halfway leaves: the first half of the file."""
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _save(array: np.ndarray) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        with open(path, "wb") as fh:  # np.save to a file object: exactly this name, no suffix added
            np.save(fh, array, allow_pickle=True)

    return damage


def _only_warning(caught: pytest.WarningsRecorder) -> str:
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1, messages
    assert "\n" not in messages[0]
    return messages[0]


def _no_warning(load: Callable[[], object]) -> object:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        return load()


# --- decoded images -------------------------------------------------------------------------------

IMAGE_DAMAGES = {
    "truncated": _truncate,
    "empty": lambda path: path.write_bytes(b""),
    "wrong shape": _save(np.zeros((16, 16, 3), np.uint8)),
    "wrong dtype": _save(np.zeros((32, 32, 3), np.float32)),
    "a pickle": _save(np.array([{"not": "pixels"}], dtype=object)),
}


@pytest.mark.parametrize("damage", IMAGE_DAMAGES.values(), ids=IMAGE_DAMAGES.keys())
def test_a_damaged_image_cache_entry_is_rebuilt_with_a_warning_naming_it_and_its_source(tmp_path, damage):
    path = write_image(tmp_path / "img" / "a.png", seed=1, size=10)
    sha, cache = sha256_file(path), tmp_path / "cache"
    clean = load_images([path], [0], [sha], 32, cache).images
    entry = cached_image_path(cache, sha, 32)
    damage(entry)

    with pytest.warns(UserWarning) as caught:
        again = load_images([path], [0], [sha], 32, cache)
    message = _only_warning(caught)
    assert str(entry) in message and str(path) in message
    expected = torch.from_numpy(decode_array(path, 32)).permute(2, 0, 1)
    assert torch.equal(again.images, clean) and torch.equal(again.images[0], expected)
    # rewritten whole: the next load reads it back without a word, even with the source gone
    path.unlink()
    assert torch.equal(_no_warning(lambda: load_images([path], [0], [sha], 32, cache)).images, clean)


def test_a_source_image_changed_since_its_manifest_row_is_a_user_error_naming_it(tmp_path):
    path = write_image(tmp_path / "img" / "a.png", seed=1, size=10)
    sha = sha256_file(path)
    write_image(path, seed=2, size=10)  # another picture under the same name, e.g. edited in place
    with pytest.raises(UserError, match=r"img/a\.png has changed since its manifest.*dvc checkout"):
        load_images([path], [0], [sha], 32, tmp_path / "cache")
    assert not cached_image_path(tmp_path / "cache", sha, 32).exists()  # nothing wrong was cached


@pytest.mark.slow
def test_train_rebuilds_a_truncated_image_cache_entry_instead_of_dying(in_tmp, image_tree, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{in_tmp / 'm.db'}")
    _tiny_project(in_tmp, image_tree)
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["study"].update(models=["cnn"], seeds=[0])
    params["train"]["workers"] = 1
    Path("params.yaml").write_text(yaml.safe_dump(params))
    row = read_manifest(Path("prepared/train.csv"))[0]
    load_images([row.path], [0], [row.sha256], 32, Path(".cache/synthmix"))  # an earlier run's entry
    entry = cached_image_path(Path(".cache/synthmix"), row.sha256, 32)
    _truncate(entry)  # what a full disk or a killed writer leaves

    with pytest.warns(UserWarning) as caught:
        assert run(["train"]) == 0
    (message,) = [str(w.message) for w in caught if str(entry) in str(w.message)]
    assert message.startswith(f"Bad cache entry {entry} (") and "read all data" in message
    assert message.endswith(f"): deleted, decoding {row.path} again.")
    assert np.array_equal(np.load(entry), decode_array(row.path, 32))


# --- frozen-backbone features ---------------------------------------------------------------------

FEATURE_DAMAGES = {
    "truncated": _truncate,
    "empty": lambda path: path.write_bytes(b""),
    "wrong length": _save(np.zeros(4, np.float32)),
    "wrong dtype": _save(np.zeros(5, np.float64)),
    "not finite": _save(np.array([0.0, np.nan, 1.0, np.inf, 2.0], np.float32)),
}


def _frozen_model() -> FrozenBackboneClassifier:
    """A frozen backbone of 5 features on 4x4 images: the feature cache's contract, in miniature."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 5))
    head = nn.Sequential(nn.Dropout(0.0), nn.Linear(5, 2))
    return FrozenBackboneClassifier(backbone, head, PixelScaling((0.5, 0.5, 0.5), (0.25, 0.25, 0.25)))


@pytest.mark.parametrize("damage", FEATURE_DAMAGES.values(), ids=FEATURE_DAMAGES.keys())
def test_a_damaged_feature_cache_entry_is_recomputed_with_a_warning_naming_it(tmp_path, damage):
    pixels = torch.randint(
        0, 256, (3, 3, 4, 4), generator=torch.Generator().manual_seed(0), dtype=torch.uint8
    )
    images = LabelledImages(pixels, torch.tensor([0, 1, 0]), ("a" * 64, "b" * 64, "c" * 64))
    model, cache = _frozen_model(), tmp_path / "cache"
    clean = backbone_features(model, images, cache, "key")
    entry = cached_feature_path(cache, "key", "b" * 64)
    damage(entry)

    with pytest.warns(UserWarning) as caught:
        again = backbone_features(model, images, cache, "key")
    assert str(entry) in _only_warning(caught)
    # the features a clean cache computes for that image (alone in its batch, as here: a batch of
    # another size may differ in the last bits) and the other images' cached ones
    alone = backbone_features(model, images.subset([1]), tmp_path / "clean", "key")
    assert torch.equal(again[1], alone[0]) and torch.equal(again[[0, 2]], clean[[0, 2]])
    torch.testing.assert_close(again, clean)
    assert torch.equal(_no_warning(lambda: backbone_features(model, images, cache, "key")), again)


# --- DDPM checkpoints -----------------------------------------------------------------------------


def _train(root: Path, train_steps: int, on_step=None) -> Path:
    """TINY_DDPM on 6 fixed images, a checkpoint after every step."""
    images = np.random.default_rng(0).integers(0, 256, size=(6, 8, 8, 3), dtype=np.uint8)
    cfg = DDPMConfig(
        **{**TINY_DDPM, "train_steps": train_steps, "checkpoint_every": 1, "checkpoint_dir": root}
    )
    return train_ddpm(cfg, images, np.array([0, 0, 0, 1, 1, 1]), 2, seed=0, fingerprint="f", on_step=on_step)


def _weights(final: Path) -> dict[str, np.ndarray]:
    from safetensors.torch import load_file

    tensors = load_file(final / "diffusion_pytorch_model.safetensors")
    return {k: v.numpy().copy() for k, v in tensors.items()}  # copies: the file is mapped, then damaged


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_a_truncated_ddpm_checkpoint_is_skipped_and_training_resumes_from_the_one_before(tmp_path):
    straight = _weights(_train(tmp_path / "straight", 3))

    def crash_at_step_2(step):
        if step == 2:
            raise KeyboardInterrupt

    root = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        _train(root, 3, crash_at_step_2)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-1", "checkpoint-2"]  # the last two kept
    _truncate(root / "checkpoint-2" / "ema.safetensors")

    steps: list[int] = []
    with pytest.warns(UserWarning) as caught:
        resumed = _train(root, 3, steps.append)
    assert re.search(
        r"checkpoint-2 does not load .*resuming from the checkpoint before it", _only_warning(caught)
    )
    assert steps == [2, 3]  # from checkpoint-1, neither from the torn one nor from scratch
    assert _same(_weights(resumed), straight)


def test_a_damaged_final_ddpm_or_checkpoint_state_is_rebuilt_not_a_crash(tmp_path):
    root = tmp_path / "ddpm"
    final = _train(root, 2)
    clean = _weights(final)

    _truncate(final / "diffusion_pytorch_model.safetensors")
    steps: list[int] = []
    with pytest.warns(UserWarning) as caught:
        assert _train(root, 2, steps.append) == final
    assert re.search(rf"{re.escape(str(final))} does not load .*rebuilding it", _only_warning(caught))
    assert steps == [] and _same(_weights(final), clean)  # rebuilt from checkpoint-2: nothing retrained

    # a checkpoint whose training state is no longer JSON, and a final model without its config
    (root / "checkpoint-2" / "fingerprint.json").write_text('{"fingerprint": "f", "st')
    (final / "config.json").unlink()
    with pytest.warns(UserWarning) as caught:
        assert _train(root, 2, steps.append) == final
    messages = sorted(str(w.message) for w in caught)
    assert len(messages) == 2 and "checkpoint-2 does not load (fingerprint.json" in messages[0]
    assert f"{final} does not load" in messages[1] and "config.json" in messages[1]
    assert steps == [2] and _same(_weights(final), clean)
    assert sorted(p.name for p in root.iterdir()) == ["checkpoint-1", "checkpoint-2", FINAL_DIR]
    _no_warning(lambda: _train(root, 2))


# --- synthetic images -----------------------------------------------------------------------------


def test_a_synthetic_png_cut_short_anywhere_before_its_end_chunk_is_not_taken_as_finished(tmp_path):
    png, record = tmp_path / "b" / "0001.png", ImageRecord("digest", 7, 0, False)
    write_synthetic(png, np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8), record)
    clean = png.read_bytes()
    end = clean.rindex(b"IEND") + 4  # past this only IEND's checksum is left: every pixel is there
    # the signature, the image data, its zlib checksum (PIL decodes every pixel without it), the data's
    # chunk checksum, the end chunk
    cuts = (0, 8, clean.index(b"IDAT") + 20, end - 18, end - 14, end - 10, end - 8, end - 1)
    for cut in cuts:
        png.write_bytes(clean[:cut])
        with pytest.warns(UserWarning) as caught:
            assert read_record(png, "digest") is None, cut
        assert _only_warning(caught).startswith(f"Synthetic image {png} is damaged (")
    png.write_bytes(clean)
    assert _no_warning(lambda: read_record(png, "digest")) == record


@pytest.mark.slow
def test_a_truncated_synthetic_png_is_regenerated_to_the_same_bytes(in_tmp, image_tree, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)  # the project's own mlflow.db
    _project(in_tmp, image_tree, {"images_per_class": 3, "ddpm": TINY_DDPM})
    assert run(["generate"]) == 0
    png = in_tmp / "synthetic" / "b" / "0001.png"
    clean = png.read_bytes()
    data = clean.index(b"IDAT")
    assert clean.index(b"tEXt") < data  # the record sits before the pixels: it reads back from the cut file
    png.write_bytes(clean[: data + 20])  # cut inside the image data

    with pytest.warns(UserWarning) as caught:
        assert run(["generate"]) == 0
    assert any(re.search(r"synthetic/b/0001\.png is damaged", str(w.message)) for w in caught)
    assert png.read_bytes() == clean
