"""The `--base` / `--base-config` options the policy benchmarks share: the shipped default base,
or any builtin-vla safetensors folder with its policy_config as JSON."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def add_base_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--base", default="shipped", help="'shipped' or a safetensors folder (with --base-config JSON)")
    ap.add_argument("--base-config", default=None, help="JSON file with the base's policy_config (for --base PATH)")


def resolve_base(args: argparse.Namespace) -> tuple[Path, Any, dict]:
    """(weights folder, policy adapter, policy_config) named by the parsed options."""
    from retain.policies import get_policy
    from retain.pretrain import shipped_base

    if args.base == "shipped":
        sb = shipped_base()
        return Path(sb.weights_dir), get_policy(sb.config["policy"]), sb.config["policy_config"]
    config = json.loads(Path(args.base_config).read_text()) if args.base_config else {}
    return Path(args.base), get_policy("builtin-vla"), config


def base_data_recipe(args: argparse.Namespace, policy_config: dict) -> dict:
    """The pretraining recipe co-finetuning regenerates data from: the shipped base's own, or for a
    --base PATH (which records none) the default preset's data settings at that base's image size."""
    from retain.pretrain import PretrainRecipe, shipped_base

    if args.base == "shipped":
        return shipped_base().recipe.to_dict()
    return {**PretrainRecipe.preset("default").to_dict(), "policy_config": policy_config}
