"""The `--base` / `--base-config` options the policy benchmarks share: the shipped default base,
or any builtin-vla safetensors folder with its policy_config as JSON."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Callable


def add_base_args(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--base", default="shipped",
                    help="'shipped' (the default shipped base), 'shipped:NAME' (an earlier one, e.g. shipped:clutter), "
                         "or a safetensors folder (with --base-config JSON)")
    ap.add_argument("--base-config", default=None, help="JSON file with the base's policy_config (for --base PATH)")


def add_finetune_args(ap: argparse.ArgumentParser) -> None:
    """--steps, --lr, --batch and --threads, defaulting to the finetune recipe `learn` records."""
    from retain.finetune import FinetuneRecipe

    recipe = FinetuneRecipe()
    ap.add_argument("--steps", type=int, default=recipe.steps, help="finetuning steps")
    ap.add_argument("--lr", type=float, default=recipe.lr)
    ap.add_argument("--batch", type=int, default=recipe.batch_size)
    ap.add_argument("--threads", type=int, default=recipe.threads, help="torch threads (1 is fastest on a shared machine)")


def shipped_name(base: str) -> str | None:
    """The shipped base a --base value names ('shipped': "default", 'shipped:NAME': NAME), else None."""
    if base == "shipped":
        return "default"
    return base.removeprefix("shipped:") if base.startswith("shipped:") else None


def resolve_base(args: argparse.Namespace) -> tuple[Path, Any, dict]:
    """(weights folder, policy adapter, policy_config) named by the parsed options."""
    from registry.errors import invalid, not_found
    from retain.policies import get_policy
    from retain.pretrain import shipped_base

    if shipped_name(args.base):
        sb = shipped_base(shipped_name(args.base))
        return Path(sb.weights_dir), get_policy(sb.config["policy"]), sb.config["policy_config"]
    if not Path(args.base).exists():
        raise not_found(f"--base {args.base} does not exist; give a builtin-vla safetensors folder or 'shipped'")
    config: Any = {}
    if args.base_config:
        try:
            config = json.loads(Path(args.base_config).read_text())
        except OSError as e:
            raise not_found(f"cannot read --base-config {args.base_config} ({e.strerror}); give the base's policy_config JSON file") from None
        except ValueError as e:
            raise invalid(f"--base-config {args.base_config} is not JSON ({e}); give the base's policy_config as a JSON object") from None
        if not isinstance(config, dict):
            raise invalid(f"--base-config {args.base_config} holds a {type(config).__name__}, not a JSON object of policy_config fields")
    return Path(args.base), get_policy("builtin-vla"), config


def known_recipe(args: argparse.Namespace) -> dict | None:
    """The pretraining recipe that made the base, where it is recorded: the shipped base's, or the
    `recipe` of a recipe.json beside a --base weights folder (what ladder_base.py and
    dagger_continue.py write). None when nothing records it."""
    from retain.pretrain import shipped_base

    if shipped_name(args.base):
        return shipped_base(shipped_name(args.base)).recipe.to_dict()
    try:
        return json.loads((Path(args.base).parent / "recipe.json").read_text())["recipe"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def run_cleanly(main: Callable[[], int]) -> int:
    """Run a benchmark's main; a RegistryError (bad input) becomes one line on stderr and its exit status."""
    from registry.errors import RegistryError

    try:
        return main()
    except RegistryError as e:
        print(f"error: {e}", file=sys.stderr)
        return e.exit_code


def base_data_recipe(args: argparse.Namespace, policy_config: dict) -> dict:
    """The pretraining recipe co-finetuning regenerates data from: the shipped base's own, or for a
    --base PATH (which records none) the clutter preset's data settings (the default's, less its continuations) at that base's image size."""
    from retain.pretrain_recipe import PretrainRecipe
    from retain.pretrain import shipped_base

    if shipped_name(args.base):
        return shipped_base(shipped_name(args.base)).recipe.to_dict()
    return {**PretrainRecipe.preset("clutter").to_dict(), "policy_config": policy_config}
