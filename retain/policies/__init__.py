"""Policies behind one adapter protocol, looked up by name.

`get_policy(name)` checks the explicit registry below first, then the entry-point group
"retain.policies", where an outside package registers `my-policy = "my_pkg.module:MyAdapter"`
(an adapter class or instance). Importing this package does not import torch; the adapter's
module is imported on first use.

Example:
    >>> adapter = get_policy("builtin-vla")
    >>> model = adapter.build({"d_model": 64})
"""
from __future__ import annotations

import importlib
from importlib import metadata
from typing import Any, Mapping

from registry.errors import invalid
from retain.policies.adapter import PolicyAdapter

ENTRY_POINT_GROUP = "retain.policies"

# name -> "module:attribute" of the adapter class; the one place built-in policies are listed.
BUILTIN: dict[str, str] = {
    "builtin-vla": "retain.policies.builtin_vla:BuiltinVLAAdapter",
}

_loaded: dict[str, PolicyAdapter] = {}


def available_policies() -> list[str]:
    """Names of every policy: built in, or registered through the entry-point group."""
    return sorted(set(BUILTIN) | {ep.name for ep in metadata.entry_points(group=ENTRY_POINT_GROUP)})


def get_policy(name: str) -> PolicyAdapter:
    """The adapter registered as `name`; an unknown name raises RegistryError naming the known ones."""
    if name in _loaded:
        return _loaded[name]
    if name in BUILTIN:
        module, attr = BUILTIN[name].split(":")
        obj = getattr(importlib.import_module(module), attr)
    else:
        eps = [ep for ep in metadata.entry_points(group=ENTRY_POINT_GROUP) if ep.name == name]
        if not eps:
            raise invalid(f"unknown policy {name!r}; known policies: {', '.join(available_policies())}")
        obj = eps[0].load()
    adapter = obj() if isinstance(obj, type) else obj
    if not isinstance(adapter, PolicyAdapter):
        raise invalid(f"policy {name!r} does not implement the adapter protocol (retain.policies.adapter.PolicyAdapter)")
    _loaded[name] = adapter
    return adapter


def policy_of(config: Mapping[str, Any]):
    """(adapter, policy_config) from a version's config; refuses versions without a policy."""
    name = (config or {}).get("policy")
    if not name:
        raise invalid(
            "this version records no policy config, so it cannot be finetuned here; "
            "finetune elsewhere and pass --finetuned CHECKPOINT --preset NAME (with --eval-cmd to score it)"
        )
    return get_policy(name), dict(config.get("policy_config") or {})


__all__ = ["ENTRY_POINT_GROUP", "PolicyAdapter", "available_policies", "get_policy", "policy_of"]
