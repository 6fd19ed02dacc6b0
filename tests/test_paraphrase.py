"""ood:paraphrase: rewordings beyond every template, opt-in so the default OOD pool stays as it was."""
from __future__ import annotations

import re

import pytest

from registry.errors import RegistryError
from retain import sim
from retain.evaluate import ood_settings, settings_for
from retain.sim.tasks import TASKS


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z]+", re.sub(r"\{\w+\}", " ", text)))


def test_paraphrase_family_is_opt_in():
    assert "ood:paraphrase" not in sim.OOD_FAMILIES
    assert "ood:paraphrase" not in ood_settings()
    assert settings_for("ood", "plates") == ood_settings()
    assert settings_for("ood:paraphrase", "plates") == ["ood:paraphrase"]
    assert sim.get_setting("ood:paraphrase").phrasing == "paraphrase"


def test_paraphrases_use_verbs_no_template_uses():
    seen = set().union(*(_words(t) for task in TASKS.values() for t in task.templates + task.heldout))
    for name in sim.SKILLS:
        task = TASKS[name]
        assert task.paraphrases, name
        for text in task.paraphrases:
            assert len(_words(text) - seen) >= 2, (name, text)  # more than a swapped function word
            assert text not in task.templates + task.heldout


def test_skill_scenes_are_phrased_from_the_paraphrases():
    batch = sim.TabletopBatch("plates", "ood:paraphrase", 12, seed=3)
    batch.reset()
    pool = {t.format(a="plate", b="rack") for t in TASKS["plates"].paraphrases}
    assert set(batch.instructions) <= pool and len(set(batch.instructions)) > 1


def test_a_task_without_paraphrases_is_refused():
    with pytest.raises(RegistryError, match="has no paraphrases"):
        TASKS["press-button"].phrasings("paraphrase")
