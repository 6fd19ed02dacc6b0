import pytest

from registry.errors import RegistryError
from retain.alphas import Alpha, as_alpha, parse_alpha


def test_single_number_applies_to_every_modality_including_other():
    a = parse_alpha("0.5")
    assert a == Alpha(0.5, 0.5, 0.5, 0.5)
    assert a.is_uniform and a.to_json() == 0.5 and str(a) == "0.5"


def test_keyed_form_and_round_trip():
    a = parse_alpha(" vision=1, language=0.8 ,action=1")
    assert (a.vision, a.language, a.action, a.other) == (1.0, 0.8, 1.0, None)
    assert str(a) == a.key == "action=1,language=0.8,vision=1"  # one canonical text: keys sorted
    assert parse_alpha(str(a)) == a
    assert list(a.to_json().items()) == [("action", 1.0), ("language", 0.8), ("vision", 1.0)]
    assert as_alpha(a.to_json()) == a
    assert list(a.per_modality()) == ["vision", "language", "action"]  # a merged file's metadata keeps modality order
    b = parse_alpha("vision=0,language=0.25,action=1,other=0")
    assert b.for_modality("other") == 0.0 and parse_alpha(str(b)) == b


@pytest.mark.parametrize(
    "text, needle",
    [
        ("", "empty"),
        ("abc", "not a number"),
        ("nan", "not finite"),
        ("vision=1,language=0.8", "missing action"),
        ("vision=1,language=x,action=1", "for language"),
        ("vision=1,langauge=0.8,action=1", "unknown modality 'langauge'"),
        ("vision=1,vision=0.5,language=1,action=1", "vision twice"),
        ("vision=1,language,action=1", "modality=value"),
        ("1.5", "alpha 1.5 is outside [0, 1]; use a value in [0, 1]"),
        ("vision=1,language=-0.1,action=1", "language=-0.1 is outside"),
    ],
)
def test_bad_alphas_are_refused_with_the_reason(text, needle):
    with pytest.raises(RegistryError) as e:
        parse_alpha(text)
    assert needle in str(e.value)


def test_extrapolate_allows_out_of_range():
    assert parse_alpha("1.5", extrapolate=True).vision == 1.5
    assert parse_alpha("vision=1,language=-0.5,action=2", extrapolate=True).action == 2.0
    assert as_alpha(1.25, extrapolate=True).other == 1.25
    with pytest.raises(RegistryError):
        as_alpha(1.25)


def test_as_alpha_accepts_numbers_dicts_and_strings():
    assert as_alpha(0.3) == Alpha.uniform(0.3)
    assert as_alpha({"vision": 1, "language": 0.5, "action": 1}).language == 0.5
    assert as_alpha("0.2") == Alpha.uniform(0.2)
    with pytest.raises(RegistryError):
        as_alpha(True)
    with pytest.raises(RegistryError):
        as_alpha([0.1])


def test_the_canonical_text_is_exact_and_tells_close_alphas_apart():
    a, b = Alpha.uniform(0.3), Alpha.uniform(0.1 + 0.2)
    assert str(a) == "0.3" and str(b) == repr(0.1 + 0.2) and a.key != b.key
    assert parse_alpha(str(b)) == b


def test_ties_rank_by_how_much_of_the_parent_is_kept():
    assert Alpha.uniform(0.25).tie_rank() == (0.25, 0.25)
    assert Alpha(1.0, 0.5, 1.0).tie_rank() == (2.5, 0.5)
