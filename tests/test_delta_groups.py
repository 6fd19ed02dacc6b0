"""The delta-location diagnostic (benchmarks/delta_groups.py): its groups cover every parameter
once, a bad prefix is refused, and a hybrid takes exactly the named group from the other model."""

import pytest


torch = pytest.importorskip("torch")

from benchmarks.delta_groups import default_groups, hybrid, main, parse_groups  # noqa: E402

from registry.errors import RegistryError  # noqa: E402
from retain.policies import get_policy  # noqa: E402
from retain.pretrain_recipe import PretrainRecipe  # noqa: E402


def _state(seed):
    adapter = get_policy("builtin-vla")
    return adapter.build(PretrainRecipe.preset("tiny").policy_config, seed=seed).state_dict()


def test_default_groups_cover_every_parameter_exactly_once():
    names = list(_state(0))
    groups = default_groups(names)
    assert {"vision.convs", "language.blocks", "action.blocks"} <= set(groups)
    for n in names:
        assert sum(n.startswith(p) for prefixes in groups.values() for p in prefixes) == 1, n


def test_a_hybrid_takes_the_group_from_the_source_and_nothing_else():
    a, b = _state(0), _state(1)
    mixed = hybrid(a, b, ("vision.convs.", "action.head"))
    moved = [k for k in a if k.startswith(("vision.convs.", "action.head"))]
    assert moved
    for k in a:
        assert mixed[k] is (b[k] if k in moved else a[k])


def test_a_prefix_that_matches_nothing_is_refused_with_the_names_to_use():
    names = list(_state(0))
    assert parse_groups(["vision.convs", "action.blocks,action.norm"], names) == {
        "vision.convs": ("vision.convs",), "action.blocks,action.norm": ("action.blocks", "action.norm")}
    with pytest.raises(RegistryError, match="'visionx' matches no parameter.*vision.convs"):
        parse_groups(["visionx"], names)


def test_an_unknown_family_is_refused_before_any_training():
    with pytest.raises(RegistryError, match="unknown split 'ood:bogus'"):
        main(["--skill", "plates", "--families", "ood:position", "ood:bogus"])


@pytest.mark.parametrize("alpha", ["0", "1.5"])
def test_a_merge_alpha_outside_the_path_is_refused(alpha, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--skill", "plates", "--alpha", alpha])
    assert stop.value.code == 2 and "must be in (0, 1]" in capsys.readouterr().err
