"""The config's value rules: each names a real field, so a misspelt key cannot switch a rule off."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from ladder.config import VALUE_RULES
from ladder.errors import LadderError
from ladder.hydra_app import compose_config

ABSENT = object()


def test_every_value_rule_names_a_field_of_the_composed_config():
    cfg = compose_config([])
    missing = [key for key, _, _ in VALUE_RULES if OmegaConf.select(cfg, key, default=ABSENT) is ABSENT]
    assert not missing, f"VALUE_RULES names keys the config does not have: {missing}"


def test_a_value_rule_refuses_in_one_line():
    with pytest.raises(LadderError, match=r"^bad config: optim.lr_rule=kaplann \(must be olmo or kaplan\)$"):
        compose_config(["optim.lr_rule=kaplann"])
