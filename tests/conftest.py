"""Shared fixtures: tiny image trees written on the fly, never downloaded."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("SYNTHMIX_QUIET", "1")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked gpu need a CUDA device: skipped, saying so, on a machine without one."""
    gpu_tests = [item for item in items if item.get_closest_marker("gpu") is not None]
    if not gpu_tests:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False)")
    for item in gpu_tests:
        item.add_marker(skip)


@pytest.fixture(autouse=True)
def _ctrl_c_reaches_the_commands_tests_start():
    """Ctrl-C as a terminal gives it: a process a test starts inherits its SIGINT disposition and mask
    from pytest's, and a test that left SIGINT ignored or blocked would make every later Ctrl-C test
    pass or fail for that reason instead of the command's. Restore both before each test."""
    if os.name == "posix":
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})
        if signal.getsignal(signal.SIGINT) in (signal.SIG_IGN, None):
            signal.signal(signal.SIGINT, signal.default_int_handler)
    yield


def write_image(path: Path, seed: int, size: int = 12, mode: str = "RGB") -> Path:
    """A small random image, distinct per seed."""
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = rng.integers(0, 256, size=(size, size, 3), dtype=np.uint8)
    Image.fromarray(pixels, "RGB").convert(mode).save(path)
    return path


@pytest.fixture
def image_tree(tmp_path: Path):
    """Factory: a class-per-folder tree with `per_class` distinct PNGs in each class."""

    def make(classes: dict[str, int], root: Path | None = None) -> Path:
        return write_image_tree(classes, root or tmp_path / "images")

    return make


def write_image_tree(classes: dict[str, int], root: Path) -> Path:
    """`image_tree` outside a function-scoped fixture: the same images for the same classes."""
    seed = 0
    for label, count in classes.items():
        for i in range(count):
            seed += 1
            write_image(root / label / f"img_{i:03d}.png", seed)
    return root


@pytest.fixture
def in_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Run the test from an empty working directory (params.yaml-relative paths land there)."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.fixture(scope="session")
def study_repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished tiny study in a git + DVC repository (tests/tiny_study.py), built once per session.
    Tests that change it put it back."""
    from tiny_study import build_repo

    return build_repo(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="session")
def tiny_clip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random CLIP model, tokenizer and image processor in one directory (tests/tiny_pipelines.py)."""
    from tiny_pipelines import build_tiny_clip

    return build_tiny_clip(tmp_path_factory.mktemp("tiny-clip"))


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Stable Diffusion pipeline directory (tests/tiny_pipelines.py), built once."""
    from tiny_pipelines import build_tiny_sd

    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))
