"""What a study tunes on: the mix's training set, split into tuning-train and validation, and the
study's name, which changes whenever anything that decides a trial's value (other than its
hyperparameters) does. The test split is never read here.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from synthmix.config import Params, to_dict
from synthmix.data import read_manifest
from synthmix.errors import UserError
from synthmix.generate.manifest import read_synthetic_manifest
from synthmix.hparams import SEARCHED
from synthmix.mixes import Mix, TrainingImage, training_images

if TYPE_CHECKING:
    from synthmix.images import LabelledImages


@dataclass(frozen=True)
class TuningData:
    classes: tuple[str, ...]
    train: LabelledImages
    validation: LabelledImages


def validation_split(
    images: Sequence[TrainingImage], fraction: float, seed: int
) -> tuple[list[int], list[int]]:
    """Indices (train, validation) into `images`: per class and source, round(fraction * n) validate.

    Every group of two or more images gives at least one to validation and keeps at least one for
    training. The choice depends on the seed, the class, the source and the content hashes only, so
    it does not change with file names or listing order.
    """
    groups: dict[tuple[str, str], list[int]] = {}
    for index, image in enumerate(images):
        groups.setdefault((image.label, image.source), []).append(index)
    train: list[int] = []
    validation: list[int] = []
    for (label, source), members in sorted(groups.items()):
        members = sorted(members, key=lambda i: images[i].sha256)
        digest = hashlib.sha256(f"{seed}:{label}:{source}".encode()).digest()
        random.Random(int.from_bytes(digest[:8], "big")).shuffle(members)
        count = 0 if len(members) < 2 else min(len(members) - 1, max(1, round(fraction * len(members))))
        validation += members[:count]
        train += members[count:]
    return sorted(train), sorted(validation)


def mix_training_set(params: Params, mix: Mix) -> list[TrainingImage]:
    """The mix's training images (real training split + synthetic set); never the test split."""
    real_rows = read_manifest(params.data.prepared_dir / "train.csv")
    synthetic_rows = (
        read_synthetic_manifest(params.generate.out_dir / "manifest.csv") if mix.synthetic else []
    )
    return training_images(real_rows, synthetic_rows, mix)


def load_tuning_data(params: Params, images: Sequence[TrainingImage]) -> TuningData:
    """Decode `images` (through the shared image cache) and split them with validation_split."""
    from synthmix.images import load_images  # torch: imported only when there is something to tune

    classes = tuple(sorted({image.label for image in images}))
    train_index, validation_index = validation_split(
        images, params.tune.validation_fraction, params.tune.seed
    )
    if not validation_index:
        raise UserError(
            f"tune.validation_fraction {params.tune.validation_fraction} leaves no validation images: "
            "every class needs at least 2 training images in the mix. Use a mix with more images per class."
        )
    labelled = load_images(
        [image.path for image in images],
        [classes.index(image.label) for image in images],
        [image.sha256 for image in images],
        params.train.image_size,
        params.train.cache_dir,
    )
    return TuningData(classes, labelled.subset(train_index), labelled.subset(validation_index))


def study_name(model: str, mix: Mix, params: Params, images: Sequence[TrainingImage]) -> str:
    """`<model>-<mix>-<hash>`: the hash covers all that decides a trial's value except its own params.

    So workers with the same space and data join one study, and a changed search space, validation
    split, image size or data set starts a new one instead of mixing incomparable trials.
    """
    tune = params.tune
    section = params.train.model_section(model)
    fixed = {k: v for k, v in to_dict(section).items() if k not in section.searched_fields}
    identity = {
        "space": {key: to_dict(getattr(tune, key)) for key in SEARCHED},
        "validation_fraction": tune.validation_fraction,
        "seed": tune.seed,
        "image_size": params.train.image_size,
        "fixed": fixed,
        "images": [[image.label, image.sha256] for image in images],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{model}-{mix.name}-{digest[:12]}"
