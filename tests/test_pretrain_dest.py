"""pretrain() refuses a destination it could not write before spending the training time."""
from __future__ import annotations

import pytest


def test_pretrain_refuses_a_destination_it_could_not_write_before_training(tmp_path):
    from registry.errors import RegistryError
    from retain.pretrain_recipe import PretrainRecipe
    from retain.pretrain import pretrain

    recipe = PretrainRecipe.preset("tiny")
    with pytest.raises(RegistryError, match="does not exist; create it first"):
        pretrain(recipe, tmp_path / "missing" / "weights")
    (tmp_path / "taken").mkdir()
    with pytest.raises(RegistryError, match="already exists"):
        pretrain(recipe, tmp_path / "taken")
