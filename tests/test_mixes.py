import pytest

from synthmix.errors import UserError
from synthmix.mixes import Mix


@pytest.mark.parametrize("text,real,synthetic", [("30r15s", 30, 15), ("0r30s", 0, 30), (" 30r0s ", 30, 0)])
def test_parse_reads_real_and_synthetic_counts(text, real, synthetic):
    mix = Mix.parse(text)
    assert (mix.real, mix.synthetic) == (real, synthetic)
    assert mix.name == text.strip()


@pytest.mark.parametrize("text", ["30x", "r15s", "30r", "30r15", "30R15S", "-1r2s", "0r0s", ""])
def test_malformed_mix_is_a_user_error_that_shows_the_notation(text):
    with pytest.raises(UserError, match=r"<N>r<M>s|no training images"):
        Mix.parse(text)


def test_infeasible_mix_names_the_limit_and_the_parameter():
    with pytest.raises(UserError, match=r"45 real .* only 30 .*data.train_per_class"):
        Mix.parse("45r30s").check_feasible(train_per_class=30, synthetic_per_class=30)
    with pytest.raises(UserError, match=r"generate.images_per_class"):
        Mix.parse("30r60s").check_feasible(train_per_class=30, synthetic_per_class=30)
    Mix.parse("30r30s").check_feasible(train_per_class=30, synthetic_per_class=30)
