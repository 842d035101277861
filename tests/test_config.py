import json
import pickle
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from synthmix.cli import run
from synthmix.config.params import (
    MODEL_NAMES,
    CNNConfig,
    Params,
    ResNetConfig,
    check_model,
    flatten,
    load_params,
    params_from_dict,
    to_dict,
)
from synthmix.core.errors import UserError
from synthmix.data.mixes import Mix

REPO = Path(__file__).resolve().parents[1]
REPO_PARAMS = REPO / "params.yaml"
STUDY_PRESET = REPO / "presets" / "study.yaml"


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "my-params.yaml"
    path.write_text(text)
    return path


def flatten_keep_empty(d: dict, prefix: str = "") -> list[tuple[str, object]]:
    """Dotted keys of a YAML mapping, an empty mapping (e.g. `generators: {}`) being a key of its own."""
    out = []
    for key, value in d.items():
        if isinstance(value, dict) and value:
            out += flatten_keep_empty(value, f"{prefix}{key}.")
        else:
            out.append((prefix + key, value))
    return out


def _model_keys(section: type[BaseModel], prefix: str = "") -> set[str]:
    """Every dotted key the config models define, walked from the models themselves."""
    keys = set()
    for name, info in section.model_fields.items():
        if isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel):
            keys |= _model_keys(info.annotation, f"{prefix}{name}.")
        else:
            keys.add(prefix + name)
    return keys


# --- the repository's files -------------------------------------------------------------------------


def test_the_repository_params_file_is_valid_and_matches_the_study_shape():
    params = load_params(REPO_PARAMS)
    assert [m.name for m in params.study.mixes] == [
        "30r0s",
        "30r15s",
        "30r30s",
        "15r30s",
        "0r30s",
        "30r30a",
        "60r0s",
        "30r15s@filtered",
    ]
    assert params.selected_mixes == params.study.mixes
    assert params.study.models == ("cnn", "resnet50")
    assert params.study.baseline == Mix(30, 0)
    assert params.train.resnet50.weight_decay == 0.001
    assert isinstance(params.data.dir, Path) and params.data.dir == Path("data")


def test_params_yaml_sets_every_key_to_the_code_default():
    # The model defaults are the one place a default lives; params.yaml repeats them for DVC.
    differing = {
        key: (value, flatten(to_dict(Params()))[key])
        for key, value in flatten(to_dict(load_params(REPO_PARAMS))).items()
        if value != flatten(to_dict(Params()))[key]
    }
    assert differing == {}, "params.yaml value != config/params.py default (yaml, code); make them equal"
    assert load_params(REPO_PARAMS) == Params()


@pytest.mark.parametrize("path", [REPO_PARAMS, STUDY_PRESET], ids=["params.yaml", "study.yaml"])
def test_the_yaml_files_list_exactly_the_keys_the_models_define(path):
    in_yaml = {key for key, _ in flatten_keep_empty(yaml.safe_load(path.read_text()))}
    in_models = _model_keys(Params)
    assert in_yaml - in_models == set(), f"keys in {path.name} that no model defines"
    assert in_models - in_yaml == set(), (
        f"keys the models define that {path.name} lacks (DVC cannot track them)"
    )


def test_the_study_preset_is_valid_and_holds_the_original_study_settings():
    study = load_params(STUDY_PRESET)
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


# --- defaults and selection --------------------------------------------------------------------------


def test_a_missing_file_an_empty_file_and_an_empty_section_mean_defaults(tmp_path):
    assert load_params(tmp_path / "absent.yaml") == Params()
    assert load_params(_write(tmp_path, "")) == Params()
    assert load_params(_write(tmp_path, "train:\n")) == Params()


def test_a_partial_file_keeps_the_other_defaults(tmp_path):
    params = load_params(_write(tmp_path, "train:\n  cnn:\n    epochs: 7\n"))
    assert params.train.cnn.epochs == 7
    assert params.train.cnn.lr == CNNConfig().lr and params.train.resnet50 == ResNetConfig()


def test_single_mix_selects_only_that_mix():
    assert params_from_dict({"mix": "15r30s"}).selected_mixes == (Mix(15, 30),)


def test_yaml_scientific_notation_is_a_number(tmp_path):
    assert yaml.safe_load("x: 1e-4")["x"] == "1e-4"  # PyYAML reads it as text: the case to handle
    params = load_params(
        _write(tmp_path, "train:\n  cnn:\n    weight_decay: 1e-4\ntune:\n  lr: [1e-5, 2E-3]\n")
    )
    assert params.train.cnn.weight_decay == pytest.approx(1e-4)
    assert isinstance(params.train.cnn.weight_decay, float)
    assert params.tune.lr == pytest.approx((1e-5, 2e-3)) and isinstance(params.tune.lr, tuple)


def test_an_integer_is_accepted_where_a_float_belongs():
    params = params_from_dict({"train": {"cnn": {"lr": 1}}})
    assert params.train.cnn.lr == 1.0 and isinstance(params.train.cnn.lr, float)


# --- errors: the file, the dotted key, and how to fix it -----------------------------------------------


@pytest.mark.parametrize(
    "text,message",
    [
        (
            "train:\n  cnn:\n    lrr: 0.1\n",
            "unknown key 'train.cnn.lrr'. Known keys at train.cnn: conv_dropout, epochs, fc_dropout, lr, "
            "weight_decay.",
        ),
        (
            "trian:\n  batch_size: 3\n",
            "unknown key 'trian'. Known keys at the top level: compute, data, generate, mix,",
        ),
        ("train:\n  resnet50:\n    dropout: 0.1\n", "unknown key 'train.resnet50.dropout'."),
    ],
)
def test_an_unknown_key_is_named_with_the_keys_known_at_its_level(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_params(path)
    assert str(info.value).startswith(f"In {path}, ")
    assert message in str(info.value)


@pytest.mark.parametrize(
    "text,message",
    [
        ("train:\n  cnn:\n    epochs: true\n", "train.cnn.epochs is true; it must be a whole number."),
        ("train:\n  cnn:\n    epochs: 2.5\n", "train.cnn.epochs is 2.5; it must be a whole number."),
        ("train:\n  cnn:\n    lr: '0.1'\n", "train.cnn.lr is '0.1'; it must be a number."),
        ("train:\n  cnn:\n    lr: [0.1]\n", "train.cnn.lr is [0.1]; it must be a number."),
        ("train:\n  batch_size: [32]\n", "train.batch_size is [32]; it must be a whole number."),
        (
            "data:\n  drop_small_classes: 'yes'\n",
            "data.drop_small_classes is 'yes'; it must be true or false.",
        ),
        ("generate:\n  text2image:\n    revision: 123\n", "generate.text2image.revision is 123; it must be"),
        ("data:\n  dir: [a, b]\n", "data.dir is ['a', 'b']; it must be a path."),
        ("study:\n  seeds: 3\n", "study.seeds is 3; it must be a list."),
        ("study:\n  seeds: [0, '1']\n", "study.seeds[1] is '1'; it must be a whole number."),
        ("train: 3\n", "train is 3; it must be a mapping of keys."),
        ("tune:\n  lr: [0.001]\n", "tune.lr is [0.001]; it must be a list of at least 2 values."),
        ("- a\n", "the top level is ['a']; it must be a mapping of keys."),
    ],
)
def test_a_wrong_type_names_the_key_and_the_type_it_needs(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(UserError) as info:
        load_params(path)
    assert str(info.value).startswith(f"In {path}, {message}")


@pytest.mark.parametrize(
    "raw,message",
    [
        ({"study": {"mixes": ["30r0s", "30x"]}}, r"study\.mixes\[1\] is '30x': Mix '30x' is malformed"),
        ({"study": {"mixes": ["30r0s", 30]}}, r"study\.mixes\[1\] is 30: write one mix as <N>r<M>s"),
        ({"study": {"mixes": ["0r0s"]}}, r"study\.mixes\[0\] is '0r0s': .*no training images"),
        ({"study": {"baseline": "thirty"}}, r"study\.baseline is 'thirty': .*malformed"),
        ({"mix": "30x"}, r"mix is '30x': .*malformed"),
    ],
)
def test_a_bad_mix_names_its_key_and_position(raw, message):
    with pytest.raises(UserError, match=r"^In params\.yaml, " + message):
        params_from_dict(raw)


@pytest.mark.parametrize(
    "raw,message",
    [
        (
            {"mix": "75r30s"},
            r"mix is '75r30s': .*75 real training images per class, but the split holds 30 "
            r"\(data.train_per_class\) plus 30 extra",
        ),
        (
            {"study": {"mixes": ["30r0s", "30r60s"]}},
            r"study\.mixes\[1\] is '30r60s': .*generate\.images_per_class",
        ),
        (
            {"generate": {"generator": "gan"}},
            r"generate\.generator is 'gan'; it must be 'ddpm', 'text2image' or 'lora'\.$",
        ),
        (
            {"generate": {"text2image": {"prompt_template": "a photo"}}},
            r"generate\.text2image\.prompt_template is 'a photo': .*\{label\}",
        ),
        (
            {"generate": {"text2image": {"mode": "video"}}},
            r"generate\.text2image\.mode is 'video'; it must be 'text' or 'image'",
        ),
        (
            {"generate": {"text2image": {"strength": 0}}},
            r"generate\.text2image\.strength is 0; it must be greater than 0",
        ),
        (
            {"generate": {"ddpm": {"resolution": 18}}},
            r"generate\.ddpm\.resolution is 18; it must be a multiple of 4 \(the UNet halves it twice\)",
        ),
        (
            {"generate": {"images_per_class": 0}},
            r"generate\.images_per_class is 0; it must be greater than 0",
        ),
        ({"study": {"models": ["cnn", "vgg"]}}, r"study\.models\[1\] is 'vgg': Unknown model.*cnn, resnet50"),
        ({"study": {"seeds": []}}, r"study\.seeds is \[\]; it must be a list of at least one value"),
        (
            {"train": {"image_size": 16}},
            r"train\.image_size is 16; it must be 32 or more \(the CNN halves it five times\)",
        ),
        ({"train": {"workers": -1}}, r"train\.workers is -1; it must be 0 or more"),
        ({"train": {"cnn": {"lr": 0}}}, r"train\.cnn\.lr is 0; it must be greater than 0"),
        ({"train": {"cnn": {"fc_dropout": 1.0}}}, r"train\.cnn\.fc_dropout is 1\.0; it must be less than 1"),
        (
            {"train": {"resnet50": {"head_dropout": -0.1}}},
            r"train\.resnet50\.head_dropout is -0\.1; it must be 0 or more",
        ),
        (
            {"train": {"resnet50": {"weights": "random"}}},
            r"train\.resnet50\.weights is 'random': use imagenet, none, auto",
        ),
        ({"tune": {"lr": [0.01, 0.0001]}}, r"tune\.lr is \[0\.01, 0\.0001\]: write the range as low, high"),
        ({"tune": {"weight_decay": [0, 0.01]}}, r"tune\.weight_decay\[0\] is 0; it must be greater than 0"),
        ({"tune": {"validation_fraction": 1}}, r"tune\.validation_fraction is 1; it must be less than 1"),
        ({"tune": {"batch_size": [16, 0]}}, r"tune\.batch_size\[1\] is 0; it must be greater than 0"),
        (
            {"report": {"confidence": 0.3}},
            r"report\.confidence is 0\.3; it must be 0\.5 or more \(e\.g\. 0\.95 for 95% intervals\)",
        ),
        (
            {"report": {"bootstrap_samples": 50}},
            r"report\.bootstrap_samples is 50; it must be 100 or more \(resamples",
        ),
    ],
)
def test_a_bad_value_fails_before_any_work_and_says_how_to_fix_it(raw, message):
    with pytest.raises(UserError, match=r"^In params\.yaml, " + message):
        params_from_dict(raw)


def test_check_params_exits_2_and_prints_the_file_and_key(tmp_path, capsys):
    good = _write(tmp_path, "mix: 30r15s\n")
    assert run(["check-params", "--params", str(good)]) == 0
    capsys.readouterr()
    bad = _write(tmp_path, "train:\n  cnn:\n    lr: fast\n")
    assert run(["check-params", "--params", str(bad)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "train.cnn.lr is 'fast'; it must be a number." in err and str(bad) in err


def test_invalid_yaml_is_a_user_error_naming_the_file(tmp_path):
    path = _write(tmp_path, "train: [unclosed\n")
    with pytest.raises(UserError, match="is not valid YAML"):
        load_params(path)


# --- models: the per-model sections of train ----------------------------------------------------------


def test_model_names_come_from_the_train_sections_and_each_section_knows_its_dropout():
    assert MODEL_NAMES == ("cnn", "resnet50", "vit_b_16", "timm", "clip", "dinov2")
    assert Params().study.models == ("cnn", "resnet50")  # the study's two; the backbones are opt-in
    params = params_from_dict({"train": {"cnn": {"fc_dropout": 0.3}, "resnet50": {"head_dropout": 0.2}}})
    assert params.train.model_section("cnn") is params.train.cnn
    assert params.train.model_section("resnet50") is params.train.resnet50
    assert (params.train.cnn.dropout, params.train.resnet50.dropout) == (0.3, 0.2)
    assert params.train.model_section("resnet50").epochs == 20
    # the tuned fields a section gives up to the search: its dropout field, never e.g. conv_dropout
    assert params.train.cnn.searched_fields == ("lr", "weight_decay", "epochs", "fc_dropout")
    assert params.train.resnet50.searched_fields == ("lr", "weight_decay", "epochs", "head_dropout")


def test_check_model_names_the_flag_and_lists_the_models():
    assert check_model("resnet50") == "resnet50"
    with pytest.raises(
        UserError,
        match=r"Unknown model 'vgg' \(--model\)\. synthmix trains: cnn, resnet50, vit_b_16, timm, clip, dinov2\.",
    ):
        check_model("vgg")
    with pytest.raises(UserError, match=r"\(study\.models\)"):
        check_model("vgg", key="study.models")
    with pytest.raises(UserError, match="Unknown model 'vgg'"):
        Params().train.model_section("vgg")


# --- the objects code below the CLI receives ----------------------------------------------------------


def _custom() -> Params:
    return params_from_dict(
        {
            "mix": "15r30s",
            "data": {"dir": "images/real"},
            "study": {"mixes": ["30r0s", "15r30s"], "baseline": "30r0s", "seeds": [4]},
            "train": {"cnn": {"lr": 0.02}, "resnet50": {"head_dropout": 0.25}},
            "tune": {"lr": [0.001, 0.1]},
        }
    )


def test_config_objects_are_frozen_hashable_and_survive_pickling():
    params = _custom()
    with pytest.raises(ValidationError):
        params.train.batch_size = 3  # type: ignore[misc]
    assert {params: 1}[_custom()] == 1 and hash(params) != hash(Params())
    copy = pickle.loads(pickle.dumps(params))
    assert copy == params and copy != Params()
    assert isinstance(copy.data.dir, Path) and copy.data.dir == Path("images/real")
    assert copy.study.mixes == (Mix(30, 0), Mix(15, 30)) and isinstance(copy.study.seeds, tuple)


def test_to_dict_gives_plain_values_that_load_back_to_the_same_config():
    params = _custom()
    plain = to_dict(params)
    assert json.loads(json.dumps(plain)) == plain
    assert plain["data"]["dir"] == "images/real" and plain["study"]["mixes"] == ["30r0s", "15r30s"]
    assert plain["study"]["baseline"] == "30r0s" and plain["tune"]["lr"] == [0.001, 0.1]
    assert to_dict(params.tune.lr) == [0.001, 0.1] and to_dict(Path("a/b")) == "a/b"
    assert params_from_dict(plain) == params
    flat = flatten(plain, "p.")
    assert flat["p.train.cnn.lr"] == 0.02 and flat["p.train.resnet50.head_dropout"] == 0.25


def test_image_to_image_keeps_the_real_subset_that_holds_its_sources():
    text = params_from_dict({"generate": {"generator": "text2image", "text2image": {"mode": "image"}}})
    assert text.generate.image_to_image
    assert text.replicate_draw(3).redraw == ("synthetic_subset", "generator_seed")
    assert params_from_dict({}).replicate_draw(3).redraw == (
        "real_subset",
        "synthetic_subset",
        "generator_seed",
    )


def test_a_redrawn_generator_seed_gives_each_study_seed_its_own_block():
    study = {"seeds": [7, 3, 5], "mixes": ["30r0s", "30r10s"]}
    params = params_from_dict({"study": study, "generate": {"images_per_class": 10}})
    assert params.synthetic_per_class == 30
    assert [params.replicate_draw(s).block for s in (3, 5, 7)] == [0, 1, 2]
    assert params.replicate_draw(3).block_size == 10
    study = {"redraw": ["real_subset"], "mixes": ["30r0s", "30r10s"]}
    fixed = params_from_dict({"study": study, "generate": {"images_per_class": 10}})
    assert fixed.synthetic_per_class == 10 and fixed.replicate_draw(3).block_size == 0
