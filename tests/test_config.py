from pathlib import Path

import pytest
import yaml

from synthmix.config import Params, load_params, params_from_dict
from synthmix.errors import UserError
from synthmix.mixes import Mix

REPO_PARAMS = Path(__file__).resolve().parents[1] / "params.yaml"


def test_the_repository_params_file_is_valid_and_matches_the_study_shape():
    params = load_params(REPO_PARAMS)
    assert [m.name for m in params.study.mixes] == ["30r0s", "30r15s", "30r30s", "15r30s", "0r30s"]
    assert params.selected_mixes == params.study.mixes
    assert params.study.models == ("cnn", "resnet50")
    assert params.train.resnet50.weight_decay == 0.001


def test_the_repository_params_file_holds_exactly_the_code_defaults():
    # One source of truth: a key dropped from params.yaml must not silently change a result.
    assert load_params(REPO_PARAMS) == Params()


def test_the_study_preset_is_valid_and_holds_the_original_study_settings():
    study = load_params(REPO_PARAMS.parent / "presets" / "study.yaml")
    assert study.generate.generator == "text2image" and study.generate.text2image.size == 512
    assert study.generate.text2image.prompt_template == "natural scenery, wildlife photo, image of a {label}"
    assert study.train.image_size == 128
    assert (study.train.cnn.lr, study.train.cnn.weight_decay, study.train.cnn.epochs) == (0.0075, 1e-4, 50)
    assert (study.train.resnet50.lr, study.train.resnet50.epochs, study.train.resnet50.weights) == (
        0.001,
        20,
        "imagenet",
    )
    assert (study.data.train_per_class, study.data.test_per_class) == (30, 30)


def test_missing_file_means_defaults(tmp_path):
    assert load_params(tmp_path / "absent.yaml") == Params()


def test_single_mix_selects_only_that_mix():
    params = params_from_dict({"mix": "15r30s"})
    assert params.selected_mixes == (Mix(15, 30),)


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"train": {"cnn": {"lrr": 0.1}}}, r"unknown key 'train.cnn.lrr'"),
        ({"train": {"cnn": {"epochs": "many"}}}, r"train.cnn.epochs must be a whole number"),
        ({"study": {"mixes": ["30r0s", "30x"]}}, r"study.mixes\[1\].*malformed"),
        ({"study": {"seeds": 3}}, r"study.seeds must be a list"),
        ({"data": {"drop_small_classes": "yes"}}, r"data.drop_small_classes must be true or false"),
    ],
)
def test_bad_values_name_the_dotted_key(raw, message):
    with pytest.raises(UserError, match=message):
        params_from_dict(raw)


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"mix": "45r30s"}, r"45 real training images per class, but the split has only 30"),
        ({"mix": "30x"}, r"malformed"),
        ({"study": {"mixes": ["30r60s"]}}, r"generate.images_per_class"),
        ({"generate": {"generator": "gan"}}, r"generate.generator is 'gan'"),
        ({"generate": {"text2image": {"prompt_template": "a photo"}}}, r"\{label\}"),
        ({"study": {"models": ["vgg"]}}, r"Unknown model 'vgg'"),
        ({"train": {"image_size": 16}}, r"train.image_size"),
    ],
)
def test_validation_fails_before_any_work(tmp_path, raw, message):
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(UserError, match=message):
        load_params(path)


def test_yaml_scientific_notation_is_a_number(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  cnn:\n    weight_decay: 1e-4\n")
    assert load_params(path).train.cnn.weight_decay == pytest.approx(1e-4)
