"""The --keep language and the rule that picks an alpha with the lineage in view (pure: no torch)."""
from __future__ import annotations

import pytest

from registry.errors import Code, RegistryError
from retain.keep import (
    DEFAULT_KEEP, Candidate, Check, Constraint, choose, format_table, order_to_check, parse_constraint, parse_keep, refusal, table,
)

EARLIER = ["plates"]


def test_the_three_forms_parse():
    assert parse_constraint("plates>=0.7") == Constraint("plates", 0.7, False)
    assert parse_constraint("generalist>=0.8x") == Constraint("generalist", 0.8, True)
    assert parse_constraint(" all >= 0.8X ") == Constraint("all", 0.8, True)
    assert parse_keep(["plates>=0.7,generalist>=0.8x"]).constraints == (
        Constraint("plates", 0.7, False), Constraint("generalist", 0.8, True), Constraint("new", 0.8, True))  # the floor joins
    assert parse_keep(["plates>=0.7", "new>=0.5"]).constraints == (Constraint("plates", 0.7, False), Constraint("new", 0.5, False))


def test_no_keep_is_the_soft_default_and_none_turns_it_off():
    spec = parse_keep([])
    assert spec.soft and spec.text == DEFAULT_KEEP + " new>=0.8x"
    assert not parse_keep(["plates>=0.7"]).soft
    none = parse_keep(["none"])
    assert none.constraints == () and not none.soft and none.resolve(EARLIER, EARLIER) == []


@pytest.mark.parametrize("spec, message", [
    ("plates", "is malformed; write TARGET>=THRESHOLD"),
    ("plates>0.7", "only '>=' is supported"),
    ("plates<=0.7", "only '>=' is supported"),
    ("plates>=", "has no threshold"),
    ("plates>=high", "threshold 'high' is not a number"),
    ("plates>=0.7xx", "is not a number"),
    ("plates>=1.5", "success rate 1.5 is outside [0, 1]"),
    ("generalist>=1.2x", "share of the parent's score 1.2 is outside [0, 1]"),
    ("plates>=-0.1", "outside [0, 1]"),
    ("plates>=nan", "outside [0, 1]"),
    (">=0.5", "is malformed"),
])
def test_bad_constraints_get_one_line(spec, message):
    with pytest.raises(RegistryError) as e:
        parse_keep([spec])
    assert message in str(e.value) and "\n" not in str(e.value) and e.value.code == Code.INVALID_VALUE


@pytest.mark.parametrize("specs, message", [
    (["plates>=0.7", "plates>=0.5"], "contradict each other; give plates one threshold"),
    (["plates>=0.7", "plates>=0.7x"], "contradict each other"),
    (["all>=0.8x", "all>=0.5x"], "contradict each other"),
    (["none", "plates>=0.7"], "--keep none contradicts --keep plates>=0.7"),
    (["plates>=0.7,"], "empty term"),
])
def test_contradictions_are_refused(specs, message):
    with pytest.raises(RegistryError, match=message):
        parse_keep(specs)


def test_the_same_constraint_twice_is_no_contradiction():
    assert parse_keep(["plates>=0.7", "plates>=0.70"]).constraints[:1] == (Constraint("plates", 0.7, False),)


def test_resolve_expands_all_and_a_named_target_overrides_it():
    checks = parse_keep(["all>=0.8x", "plates>=0.5"]).resolve(["plates", "whiteboard"], ["plates", "whiteboard"])
    assert [c.text for c in checks] == ["plates>=0.5", "whiteboard>=0.8x", "generalist>=0.8x"]  # no new skill named
    checks = parse_keep([]).resolve(["plates"], ["plates", "whiteboard"], new="whiteboard")
    assert [(c.label, c.text, c.new) for c in checks] == [
        ("plates", "plates>=0.8x", False), ("generalist", "generalist>=0.8x", False), ("whiteboard (new)", "new>=0.8x", True)]
    assert parse_keep([]).resolve([], ["plates"], new="mine")[-1].label == "generalist"  # a skill the simulator cannot score
    # all covers what the simulator can score; a skill it cannot is left out, not failed
    assert [c.text for c in parse_keep([]).resolve(["mine", "plates"], ["plates"])] == ["plates>=0.8x", "generalist>=0.8x"]
    assert [c.text for c in parse_keep([]).resolve([], [])] == ["generalist>=0.8x"]  # the first skill: the suite alone


def test_resolve_refuses_a_skill_not_in_the_lineage_or_not_scorable():
    with pytest.raises(RegistryError, match=r"--keep names 'mugs', which is not a skill of this lineage \(earlier skills: plates\)"):
        parse_keep(["mugs>=0.5"]).resolve(["plates"], ["plates", "mugs"])
    with pytest.raises(RegistryError, match="earlier skills: none yet"):
        parse_keep(["plates>=0.5"]).resolve([], [])
    with pytest.raises(RegistryError, match="which the simulator cannot score"):
        parse_keep(["mine>=0.5"]).resolve(["mine"], [])


PARENT = Candidate("0", 0.0, 0.10, {"plates": 0.80, "generalist": 0.40})
CHECKS = parse_keep(["all>=0.8x"]).resolve(EARLIER, EARLIER)


def cand(key, val, plates, gen, moved=1.0):
    return Candidate(key, key, val, {"plates": plates, "generalist": gen}, moved)


def test_the_best_validation_success_that_meets_every_check():
    cands = [cand("a", 0.9, 0.10, 0.40), cand("b", 0.7, 0.70, 0.35), cand("c", 0.6, 0.79, 0.39)]
    c = choose(cands, PARENT, CHECKS, parse_keep(["all>=0.8x"]))
    assert c.chosen.key == "b" and c.met and [v.ok for v in c.verdicts] == [True, True]
    assert choose(cands, PARENT, [], parse_keep(["none"])).chosen.key == "a"  # no constraint: the plain best


def test_a_candidate_that_does_not_learn_is_never_chosen_to_meet_constraints():
    cands = [cand("a", 0.9, 0.10, 0.40), cand("flat", 0.10, 0.80, 0.40)]  # "flat" only ties the parent on validation
    assert [c.key for c in order_to_check(cands, PARENT)] == ["a"]
    choice = choose(cands, PARENT, CHECKS, parse_keep(["all>=0.8x"]))
    assert choice.stop and not choice.met and choice.chosen.key == "a"
    e = refusal(choice)
    msg = str(e)
    assert e.code == Code.INVALID_STATE and "\n" not in msg
    assert "the best trade-off, alpha a, keeps plates 10% (needs 64%) with 90% on validation" in msg
    for option in ("--rehearse SHARE", "--mode co-ft", "a looser --keep", "--force"):
        assert option in msg


def test_the_best_trade_off_is_the_smallest_worst_shortfall_and_the_default_commits_it():
    cands = [cand("a", 0.9, 0.10, 0.40), cand("b", 0.5, 0.50, 0.40), cand("c", 0.4, 0.60, 0.10)]
    soft = choose(cands, PARENT, parse_keep([]).resolve(EARLIER, EARLIER), parse_keep([]))
    assert soft.chosen.key == "b" and not soft.met and "committed as the default's best trade-off" in soft.reason
    forced = choose(cands, PARENT, CHECKS, parse_keep(["all>=0.8x"]), force=True)
    assert forced.chosen.key == "b" and "(--force)" in forced.reason


def test_ties_keep_the_larger_share_then_the_smaller_move():
    cands = [cand("a", 0.7, 0.70, 0.35, moved=2.0), cand("b", 0.7, 0.75, 0.38, moved=3.0), cand("c", 0.7, 0.75, 0.38, moved=2.5)]
    assert choose(cands, PARENT, CHECKS, parse_keep(["all>=0.8x"])).chosen.key == "c"


def test_unchecked_candidates_are_not_chosen_as_meeting():
    # checked lazily: "a" was checked and failed, "b" met, "c" (worse validation) never reached
    cands = [cand("a", 0.9, 0.10, 0.40), cand("b", 0.7, 0.70, 0.35), Candidate("c", "c", 0.6)]
    assert choose(cands, PARENT, CHECKS, parse_keep(["all>=0.8x"])).chosen.key == "b"


def test_nothing_learns_falls_back_to_the_best_validation():
    cands = [cand("a", 0.05, 0.80, 0.40), cand("b", 0.08, 0.10, 0.40)]
    c = choose(cands, PARENT, CHECKS, parse_keep(["all>=0.8x"]))
    assert c.chosen.key == "b" and not c.met and c.stop and "no candidate beats the parent's 10% on validation" in c.reason
    assert "plates 10% (needs 64%)" in c.reason
    soft = choose(cands, PARENT, CHECKS, parse_keep([]))
    assert soft.chosen.key == "b" and not soft.stop and "committed as the default's best trade-off" in soft.reason


def test_the_table_shows_parent_candidate_delta_and_verdict():
    rows = table(CHECKS, PARENT, cand("b", 0.7, 0.70, 0.30), recorded={"plates": 0.86})
    assert [(r["target"], r["ok"]) for r in rows] == [("plates", True), ("generalist", False)]
    assert rows[0]["delta"] == pytest.approx(-0.10) and rows[0]["recorded"] == 0.86
    text = format_table(rows, "b", 0.7)
    assert "plates" in text and "-10 pts" in text and "generalist>=0.8x: NOT met (needs 32%)" in text
    assert "recorded" in text.splitlines()[1]


def test_the_new_skill_is_measured_against_the_plain_finetune():
    checks = parse_keep([]).resolve(EARLIER, EARLIER + ["whiteboard"], new="whiteboard")
    parent = Candidate("0", 0.0, 0.0, {"plates": 0.8, "generalist": 0.4, "whiteboard (new)": 0.0})
    finetuned = Candidate("1", 1.0, 0.0, {"whiteboard (new)": 0.9})
    learned = Candidate("a", "a", 0.10, {"plates": 0.7, "generalist": 0.4, "whiteboard (new)": 0.8}, 2.0)
    forgot = Candidate("b", "b", 0.12, {"plates": 0.8, "generalist": 0.4, "whiteboard (new)": 0.1}, 1.0)  # better validation, learned nothing
    c = choose([learned, forgot], parent, checks, parse_keep([]), finetuned=finetuned)
    assert c.chosen.key == "a" and c.met
    assert [round(v.needed, 2) for v in c.verdicts] == [0.64, 0.32, 0.72]  # 0.8 x the finetune's 90% for the new skill
    rows = table(checks, parent, learned, finetuned=finetuned)
    assert rows[-1]["target"] == "whiteboard (new)" and rows[-1]["constraint"] == "new>=0.8x" and rows[-1]["ok"]


def test_the_trade_off_is_made_among_candidates_that_learn_the_new_skill():
    checks = parse_keep([]).resolve(EARLIER, EARLIER + ["whiteboard"], new="whiteboard")
    parent = Candidate("0", 0.0, 0.0, {"plates": 0.7, "generalist": 0.35, "whiteboard (new)": 0.0})
    finetuned = Candidate("1", 1.0, 0.0, {"whiteboard (new)": 0.15})
    flat = Candidate("0.25", 0.25, 0.02, {"plates": 0.1, "generalist": 0.3, "whiteboard (new)": 0.0}, 0.75)
    learner = Candidate("a", "a", 0.44, {"plates": 0.05, "generalist": 0.0, "whiteboard (new)": 0.6}, 2.25)
    c = choose([flat, learner], parent, checks, parse_keep([]), finetuned=finetuned)
    assert c.chosen.key == "a" and not c.met and "committed as the default's best trade-off" in c.reason


def test_check_labels():
    assert Check(None, Constraint("all", 0.8, True)).text == "generalist>=0.8x"
