"""Alpha strategies against real, cheap objectives (no mocks: a score is just a function of alpha)."""
from __future__ import annotations

import pytest

from registry.errors import RegistryError
from retain.alphas import Alpha
from retain.select import STRATEGIES, get_strategy, parse_grid


def peaked(center: float):
    """An inverted U: what a merged backbone's OOD success looks like along alpha."""
    return lambda a: 1.0 - abs(a.language - center)


def test_grid_picks_the_peak_and_records_every_candidate():
    sel = get_strategy("grid").choose(peaked(0.5), grid=[0.75, 0.25, 0.5])
    assert sel.alpha == Alpha.uniform(0.5)
    assert sel.score == pytest.approx(1.0)
    assert [p["alpha"].to_json() for p in sel.sweep] == [0.25, 0.5, 0.75]
    assert [p["score"] for p in sel.sweep] == pytest.approx([0.75, 1.0, 0.75])


def test_grid_ties_go_to_the_smaller_alpha():
    sel = get_strategy("grid").choose(lambda a: 0.4, grid=[0.25, 0.5, 0.75])
    assert sel.alpha == Alpha.uniform(0.25)
    flat_top = lambda a: 0.9 if a.vision >= 0.5 else 0.1  # noqa: E731
    assert get_strategy("grid").choose(flat_top, grid=[0.25, 0.5, 0.75]).alpha == Alpha.uniform(0.5)


def test_grid_scores_each_alpha_once():
    calls = []
    get_strategy("grid").choose(lambda a: calls.append(a) or 0.0, grid=[0.5, 0.5, 0.25])
    assert sorted(a.vision for a in calls) == [0.25, 0.5]


def test_language_strategy_keeps_vision_and_action_at_one():
    seen = []

    def score(alpha):
        seen.append(alpha)
        return 1.0 - abs(alpha.language - 0.25)

    sel = get_strategy("language").choose(score, grid=[0.25, 0.5, 0.75])
    assert sel.alpha == Alpha(vision=1.0, language=0.25, action=1.0)
    assert all(a.vision == 1.0 and a.action == 1.0 for a in seen)
    assert len(sel.sweep) == 3


def test_coordinate_search_finds_a_separable_optimum():
    target = {"vision": 0.75, "language": 0.25, "action": 0.5}

    def score(alpha):
        return -sum((alpha.for_modality(m) - target[m]) ** 2 for m in target)

    sel = get_strategy("coordinate").choose(score, grid=[0.25, 0.5, 0.75])
    assert sel.alpha == Alpha(**target)
    assert sel.score == pytest.approx(0.0)
    # memoised: never more distinct candidates than the search space
    assert len(sel.sweep) <= 27


def test_coordinate_ties_keep_more_of_the_parent():
    sel = get_strategy("coordinate").choose(lambda a: 0.5, grid=[0.25, 0.75])
    assert sel.alpha == Alpha(0.25, 0.25, 0.25)


def test_fixed_scores_nothing():
    sel = get_strategy("fixed").choose(lambda a: pytest.fail("fixed must not score"), alpha=Alpha.uniform(0.5))
    assert sel.alpha == Alpha.uniform(0.5) and sel.sweep == [] and sel.score is None


@pytest.mark.parametrize("text", ["", " , ", "0.5,abc", "1.5", "-0.1", "nan"])
def test_bad_grids_are_refused(text):
    with pytest.raises(RegistryError) as e:
        parse_grid(text)
    assert "alpha grid" in str(e.value)


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(RegistryError) as e:
        get_strategy("bayes")
    for name in STRATEGIES:
        assert name in str(e.value)


def test_non_finite_score_is_refused():
    with pytest.raises(RegistryError, match="finite"):
        get_strategy("grid").choose(lambda a: float("nan"), grid=[0.5])


def test_a_sweep_where_every_candidate_ties_is_flagged_as_no_evidence():
    from retain.select import tie_warning

    flat = get_strategy("grid").choose(lambda a: 0.0, grid=[0.25, 0.5, 0.75])
    msg = tie_warning(flat, "ood:position")
    assert msg.startswith("warning: every alpha candidate scored 0.00 on ood:position, so alpha 0.25 is only the tie-break")
    assert "\n" not in msg
    assert tie_warning(get_strategy("grid").choose(peaked(0.5), grid=[0.25, 0.5, 0.75]), "ood:position") is None
    assert tie_warning(get_strategy("grid").choose(lambda a: 0.0, grid=[0.5]), "ood:position") is None  # one candidate: no search


@pytest.mark.parametrize("name", sorted(STRATEGIES))
def test_the_first_round_is_what_every_search_scores_first(name):
    """learn scores a strategy's first round side by side before the search asks, so it must be
    exactly the candidates the search visits first, whatever the scores turn out to be."""
    strategy = get_strategy(name)
    first = [a.key for a in strategy.first_round((0.25, 0.5, 0.75))]
    for objective in (lambda a: 0.0, lambda a: -a.tie_rank()[0], lambda a: a.language):
        visited = []

        def score(alpha):
            visited.append(alpha.key)
            return objective(alpha)

        strategy.choose(score, grid=(0.25, 0.5, 0.75), alpha=Alpha.uniform(0.5))
        assert visited[:len(first)] == first
    assert bool(first) == strategy.needs_scores


def test_the_broad_set_covers_one_alpha_the_language_search_and_per_modality_combinations():
    from retain.select import broad_candidates, get_strategy

    keys = [a.key for a in broad_candidates((0.25, 0.5, 0.75))]
    assert len(keys) == len(set(keys)) == 12
    for g in ("0.25", "0.5", "0.75"):
        assert g in keys  # one alpha for every modality
        assert f"action=1,language={g},vision=1" in keys  # the language-only search
        assert f"action=1,language=1,vision={g}" in keys and f"action=1,language={g},vision={g}" in keys
    assert [a.key for a in broad_candidates((0.5, 1.0))] == [  # repeats at 1.0 are scored once
        "0.5", "action=1,language=0.5,vision=1", "action=1,language=1,vision=0.5", "action=1,language=0.5,vision=0.5", "1",
        "action=1,language=1,vision=1"]
    sel = get_strategy("broad").choose(lambda a: a.language - abs(a.vision - 0.5), grid=(0.5, 1.0))
    assert sel.alpha.key == "action=1,language=1,vision=0.5" and len(sel.sweep) == 6
