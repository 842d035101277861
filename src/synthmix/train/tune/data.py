"""What a study tunes on: the mix's training set less the held-out real images, the held-out real
images themselves (the validation set), and the study's name, which changes whenever anything that
decides a trial's value (other than its hyperparameters) does. The test split is never read here.

The validation set is real and the same for every mix of the study: per class, the highest-ranked
round(tune.validation_fraction * n) of its n real training images. No mix tunes on them, so 0r30s is
validated on real images like 30r0s, and studies of different mixes are scored on the same images.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from synthmix.config.hparams import SEARCHED
from synthmix.config.params import Params, TrainConfig, TuneConfig, to_dict
from synthmix.core.errors import UserError
from synthmix.data import vetting
from synthmix.data.mixes import Mix, TrainingImage, training_images
from synthmix.data.real import SplitRow, read_manifest
from synthmix.generate.manifest import read_synthetic_manifest

if TYPE_CHECKING:
    from synthmix.data.images import LabelledImages


@dataclass(frozen=True)
class TuningSets:
    """The images of one study: what trials train on, and the shared real validation images."""

    train: list[TrainingImage]
    validation: list[TrainingImage]


@dataclass(frozen=True)
class TuningData:
    classes: tuple[str, ...]
    train: LabelledImages
    validation: LabelledImages


def held_out_real(real_rows: Sequence[SplitRow], fraction: float) -> list[SplitRow]:
    """Per class, the highest-ranked round(fraction * n) of its n real training rows, by class and rank.

    The highest ranks, because mixes take real images from rank 0 up: a mix of fewer real images than
    the class has loses none of them to validation.
    """
    by_class: dict[str, list[SplitRow]] = {}
    for row in sorted(real_rows, key=lambda r: (r.label, r.rank)):
        if row.split == "train":
            by_class.setdefault(row.label, []).append(row)
    held: list[SplitRow] = []
    for label, rows in by_class.items():
        count = round(fraction * len(rows))
        if not 1 <= count < len(rows):
            raise UserError(
                f"tune.validation_fraction {fraction} holds out {count} of the {len(rows)} real training "
                f"images of class '{label}'; it must hold out at least one and leave at least one. "
                "Change tune.validation_fraction or data.train_per_class."
            )
        held += rows[len(rows) - count :]
    return held


def tuning_sets(params: Params, mix: Mix) -> TuningSets:
    """The mix's training images (real training split + synthetic set) less the held-out real ones,
    and the held-out real ones; never the test split."""
    real_rows = read_manifest(params.data.prepared_dir / "train.csv")
    held = held_out_real(real_rows, params.tune.validation_fraction)
    if mix.real > params.data.train_per_class:  # the extra-real control also takes the extra images
        real_rows += read_manifest(params.data.prepared_dir / "extra.csv")
    synthetic_rows = (
        read_synthetic_manifest(params.generate.manifest_path(mix.generator)) if mix.synthetic else []
    )
    held_paths = {row.path for row in held}
    left_out = vetting.left_out_by_mix([mix], params.generate.first_name, params.quality.filters_path)
    chosen = training_images(real_rows, synthetic_rows, mix, rejected=left_out.get(mix, frozenset()))
    train = [image for image in chosen if image.path not in held_paths]
    validation = [TrainingImage(row.path, row.label, row.sha256, "real") for row in held]
    empty = sorted({image.label for image in validation} - {image.label for image in train})
    if empty:
        raise UserError(
            f"Mix {mix.name} has no training image of class '{empty[0]}' left once the highest-ranked "
            f"real images are held out for validation (tune.validation_fraction "
            f"{params.tune.validation_fraction}). Tune a mix with more images, or lower the fraction."
        )
    return TuningSets(train, validation)


def load_tuning_data(train: TrainConfig, sets: TuningSets) -> TuningData:
    """Decode both sets through the shared image cache."""
    from synthmix.data.images import load_images  # torch: imported only when there is something to tune

    images = [*sets.train, *sets.validation]
    classes = tuple(sorted({image.label for image in images}))
    labelled = load_images(
        [image.path for image in images],
        [classes.index(image.label) for image in images],
        [image.sha256 for image in images],
        train.image_size,
        train.cache_dir,
    )
    from synthmix.train.augment import with_copies

    labelled = with_copies(labelled, [image.augment_seed for image in images], train.augment)
    count = len(sets.train)
    return TuningData(
        classes, labelled.subset(list(range(count))), labelled.subset(list(range(count, len(images))))
    )


def study_name(model: str, mix: Mix, tune: TuneConfig, train: TrainConfig, sets: TuningSets) -> str:
    """`<model>-<mix>-<hash>`: the hash covers all that decides a trial's value except its own params.

    So workers with the same space and data join one study, and a changed search space, validation
    set, image size or data set starts a new one instead of mixing incomparable trials.
    """
    section = train.model_section(model)
    fixed = {k: v for k, v in to_dict(section).items() if k not in section.searched_fields}
    identity = {
        "space": {key: to_dict(getattr(tune, key)) for key in SEARCHED},
        "seed": tune.seed,
        "image_size": train.image_size,
        "fixed": fixed,
        "images": [[image.label, image.sha256] for image in sets.train],
        "validation": [[image.label, image.sha256] for image in sets.validation],
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()
    return f"{model}-{mix.name}-{digest[:12]}"
