"""The image-use diagnostic (benchmarks/vision_use.py): it must see a camera that matters and
report exactly zero for a policy whose vision tokens do not depend on the image."""

import pytest


torch = pytest.importorskip("torch")

from benchmarks.vision_use import measure  # noqa: E402

from retain.policies import get_policy  # noqa: E402
from retain.pretrain_recipe import PretrainRecipe  # noqa: E402
from retain.pretrain import collect_frames  # noqa: E402


@pytest.fixture(scope="module")
def frames():
    return collect_frames(["reach-object", "put-in-bowl"], "pretrain", 12, seed=3)


def _tiny():
    adapter = get_policy("builtin-vla")
    return adapter, adapter.build(PretrainRecipe.preset("tiny").policy_config, seed=0).eval()


def test_a_policy_whose_actions_depend_on_the_image_shows_it(frames):
    adapter, model = _tiny()
    r = measure(model, adapter, frames, model.cfg.chunk, batch=64)
    assert r["action_change"] > 1e-3
    assert r["l1"] > 0 and r["l1_shuffled"] > 0


def test_a_blind_policy_reports_zero_image_use(frames):
    adapter, model = _tiny()
    with torch.no_grad():  # conv weights zero: every image gives the same vision tokens
        for conv in model.vision.convs:
            conv[0].weight.zero_()
    r = measure(model, adapter, frames, model.cfg.chunk, batch=64)
    assert r["action_change"] == 0.0
    assert r["image_gain"] == 0.0
