import pytest

from registry.errors import RegistryError
from retain.partitions import PRESETS, detect_preset, get_partition_map, load_rules, parse_rules

OPENPI = {
    "paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers.0.mlp.fc1.weight": "vision",
    "paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight": "vision",
    "paligemma_with_expert.paligemma.model.language_model.layers.3.self_attn.q_proj.weight": "language",
    "paligemma_with_expert.paligemma.model.language_model.embed_tokens.weight": "language",
    "paligemma_with_expert.paligemma.lm_head.weight": "language",
    "paligemma_with_expert.gemma_expert.model.layers.0.mlp.up_proj.weight": "action",
    "paligemma_with_expert.gemma_expert.lm_head.weight": "action",
    "state_proj.weight": "action",
    "action_in_proj.weight": "action",
    "action_out_proj.bias": "action",
    "action_time_mlp_in.weight": "action",
    "action_time_mlp_out.bias": "action",
    "time_mlp_in.weight": "action",
    "some_new_head.weight": None,
    "xstate_proj.weight": None,
}

SMOLVLA = {
    "model.vlm_with_expert.vlm.model.vision_model.encoder.layers.0.self_attn.k_proj.weight": "vision",
    "model.vlm_with_expert.vlm.model.connector.modality_projection.proj.weight": "vision",
    "model.vlm_with_expert.vlm.model.text_model.layers.0.mlp.gate_proj.weight": "language",
    "model.vlm_with_expert.vlm.lm_head.weight": "language",
    "model.vlm_with_expert.lm_expert.layers.0.self_attn.o_proj.weight": "action",
    "model.state_proj.weight": "action",
    "model.action_in_proj.weight": "action",
    "model.action_out_proj.weight": "action",
    "model.action_time_mlp_in.weight": "action",
    "normalize_inputs.buffer_observation_state.mean": None,
}


@pytest.mark.parametrize("preset", ["openpi-pi0", "openpi-pi05"])
def test_openpi_presets(preset):
    pm = get_partition_map(preset)
    for name, modality in OPENPI.items():
        assert pm.modality_of(name) == modality, name


def test_lerobot_pi0_is_openpi_with_a_model_prefix():
    pm = get_partition_map("lerobot-pi0")
    for name, modality in OPENPI.items():
        assert pm.modality_of("model." + name) == modality, name
        assert pm.modality_of(name) is None  # the openpi spelling is not claimed here


def test_lerobot_smolvla():
    pm = get_partition_map("lerobot-smolvla")
    for name, modality in SMOLVLA.items():
        assert pm.modality_of(name) == modality, name


def test_builtin():
    pm = get_partition_map("builtin")
    assert pm.modality_of("vision.conv1.weight") == "vision"
    assert pm.modality_of("language.embed.weight") == "language"
    assert pm.modality_of("action.head.bias") == "action"
    assert pm.modality_of("visionary.weight") is None


def test_first_matching_rule_wins():
    pm = parse_rules("action: ^enc\\.head\\.\nvision: ^enc\\.\n")
    assert pm.modality_of("enc.head.w") == "action"
    assert pm.modality_of("enc.body.w") == "vision"
    assert pm.modality_of("dec.w") is None


def test_rules_file_round_trip(tmp_path):
    f = tmp_path / "rules.txt"
    f.write_text("# my split\n\nvision:  ^enc\\.\nlanguage: ^dec\\.(a|b):x\nother: .*\n")
    pm = load_rules(f)
    assert [r.modality for r in pm.rules] == ["vision", "language", "other"]
    assert pm.rules[1].pattern == "^dec\\.(a|b):x"  # only the first colon separates
    assert pm.modality_of("zzz") == "other"
    assert parse_rules(PRESETS["openpi-pi0"].to_text()).rules == PRESETS["openpi-pi0"].rules


@pytest.mark.parametrize(
    "text, needle",
    [
        ("vision ^enc", "rules:1: expected 'modality: regex'"),
        ("# c\nvisoin: ^enc", "rules:2: unknown modality 'visoin'"),
        ("vision: ^enc(", "rules:1: bad regular expression"),
        ("vision:", "expected 'modality: regex'"),
        ("# only comments\n", "holds no rules"),
    ],
)
def test_bad_rules_are_refused_with_the_line(text, needle):
    with pytest.raises(RegistryError) as e:
        parse_rules(text, "rules")
    assert needle in str(e.value)


def test_unknown_preset_and_missing_rules_file(tmp_path):
    with pytest.raises(RegistryError, match="unknown partition preset 'pi7'"):
        get_partition_map("pi7")
    with pytest.raises(RegistryError, match="does not exist"):
        get_partition_map(rules=tmp_path / "nope.txt")
    with pytest.raises(RegistryError, match="not both"):
        get_partition_map("builtin", tmp_path / "x")


def test_detect_preset():
    assert detect_preset(SMOLVLA).name == "lerobot-smolvla"
    assert detect_preset(["model." + n for n in OPENPI]).name == "lerobot-pi0"
    assert detect_preset(["foo", "bar"]) is None
