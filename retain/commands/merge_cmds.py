"""`merge` and `partitions`: the merge engine on the command line.

torch is imported only inside `merge`, so `--help` and `partitions` stay fast.
"""
from __future__ import annotations

import re

import click

from registry.cli_support import emit, json_option
from registry.errors import invalid

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]i?b?|b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "b": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}


def parse_size(text: str) -> int:
    """'2GB' -> 2e9, '500MiB' -> 500 * 2**20, '1000' -> 1000 bytes (Hugging Face's units)."""
    m = _SIZE.match(text or "")
    if not m:
        raise invalid(f"shard size {text!r} is not a size; write e.g. 2GB, 500MB or 1GiB")
    unit = (m.group(2) or "").lower().rstrip("b")
    size = int(float(m.group(1)) * _UNITS[unit])
    if size <= 0:
        raise invalid(f"shard size {text!r} must be positive")
    return size


def _partition_of(checkpoint: str, preset: str | None, rules: str | None):
    """(map, detected) for CHECKPOINT: the same choice for `merge` and `partitions`."""
    from registry.checkpoint import open_checkpoint
    from retain.partitions import get_partition_map, resolve_partition

    if preset is not None or rules is not None:
        return get_partition_map(preset, rules), False  # a bad preset fails before any file is read
    with open_checkpoint(checkpoint) as ckpt:
        return resolve_partition(ckpt.names)


def _policy_config(pre: str, finetuned: tuple[str, ...], alphas, partition) -> dict | None:
    """config.json for a merged folder: PRE's policy (so `base import` and `eval` can load it) and how it was merged."""
    import json
    from pathlib import Path

    source = Path(pre) / "config.json"
    if not source.is_file():
        return None
    try:
        config = json.loads(source.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    config.pop("retain", None)  # export's record names PRE's version and hash, which the merge does not have
    config["retain_merge"] = {"pre": str(pre), "finetuned": [str(f) for f in finetuned],
                              "alphas": [a.to_json() for a in alphas], "partition": partition.name if partition else None}
    return config


@click.command("merge")
@click.argument("pre", type=click.Path())
@click.argument("finetuned", nargs=-1, required=True, type=click.Path())
@click.option("--alpha", "alphas", multiple=True, required=True,
              help="0.5 or vision=1,language=0.8,action=1[,other=..]; once, or once per finetuned checkpoint.")
@click.option("--preset", default=None, help="Partition preset: builtin, openpi-pi0, openpi-pi05, lerobot-pi0, lerobot-smolvla.")
@click.option("--rules", type=click.Path(), default=None, help="Partition rules file: 'modality: regex' per line.")
@click.option("-o", "--output", "output", required=True, type=click.Path(), help="x.safetensors for one file, else a folder.")
@click.option("--shard-size", default=None, help="Shard the output folder at this size, e.g. 2GB (default: one file).")
@click.option("--extrapolate", is_flag=True, help="Allow alphas outside [0, 1].")
@click.option("--on-mismatch", type=click.Choice(["error", "take-finetuned"]), default="error", show_default=True,
              help="Different keys/shapes/dtypes/buffers: fail, or copy the finetuned tensor.")
@click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
@json_option
def merge_cmd(pre, finetuned, alphas, preset, rules, output, shard_size, extrapolate, on_mismatch, quiet, as_json):
    """Merge finetuned checkpoints into PRE: pre + sum_i alpha_i * (ft_i - pre), per modality.

    \b
    Example:
      retain merge base/ ft/ --alpha vision=1,language=0.8,action=1 --preset openpi-pi0 -o merged/ --shard-size 2GB
    """
    from retain.alphas import parse_alpha
    from retain.merge import merge_checkpoints, modalities_summary

    parsed = [parse_alpha(a, extrapolate, fix='pass --extrapolate to allow it') for a in alphas]
    if len(parsed) not in (1, len(finetuned)):
        raise invalid(f"got {len(parsed)} --alpha for {len(finetuned)} finetuned checkpoints; give one, or one per checkpoint")
    max_shard = parse_size(shard_size) if shard_size else None
    partition, detected = _partition_of(pre, preset, rules)
    if partition is None and not all(a.is_uniform for a in parsed):
        raise invalid(f"no partition preset claims any tensor of {pre}, and a per-modality alpha needs one; "
                      "write a rules file and pass --rules FILE (`retain partitions CKPT --print-rules` starts one)")
    config = _policy_config(pre, finetuned, parsed, partition)
    report = merge_checkpoints(pre, list(finetuned), parsed, partition, output, max_shard_bytes=max_shard,
                               progress=not quiet, on_mismatch=on_mismatch, extrapolate=extrapolate, config=config)

    def text(r):
        how = "detected; --preset or --rules to choose another" if detected else "given"
        lines = [f"merged {r.tensors} tensors ({r.params:,} params) into {r.dest} in {r.seconds:.1f}s "
                 f"({(r.bytes_read + r.bytes_written) / max(r.seconds, 1e-9) / 1e6:.0f} MB/s)",
                 f"  partition {partition.name} ({how})" if partition else "",
                 modalities_summary(r)]
        if config and not r.dest.endswith(".safetensors"):
            lines.append(f"  config.json: policy {config.get('policy', '?')} from {pre}")
        if r.taken_finetuned:
            lines.append(f"  took {len(r.taken_finetuned)} tensors from the finetuned checkpoint: {', '.join(r.taken_finetuned[:5])}")
        if r.dropped:
            lines.append(f"  dropped {len(r.dropped)} tensors only in the pretrained checkpoint: {', '.join(r.dropped[:5])}")
        return "\n".join(line for line in lines if line)

    emit(report, as_json, text)


@click.command("partitions")
@click.argument("checkpoint", type=click.Path())
@click.option("--preset", default=None, help="Partition preset (default: the one that claims the most tensors).")
@click.option("--rules", type=click.Path(), default=None, help="Partition rules file: 'modality: regex' per line.")
@click.option("--examples", default=3, show_default=True, help="Example names shown per modality.")
@click.option("--print-rules", is_flag=True, help="Print the map in rules-file syntax (a start for your own file).")
@json_option
def partitions_cmd(checkpoint, preset, rules, examples, print_rules, as_json):
    """Show how a partition map splits CHECKPOINT: tensors, parameters and examples per modality.

    A rules file has one `modality: regex` per line (vision, language, action or other; Python
    regex searched in the tensor name; first match wins; # starts a comment).

    \b
    Example:
      retain partitions pi0/ --preset openpi-pi0
      retain partitions pi0/ --preset openpi-pi0 --print-rules > my-rules.txt
    """
    from registry.checkpoint import open_checkpoint

    pm, _ = _partition_of(checkpoint, preset, rules)
    with open_checkpoint(checkpoint) as ckpt:
        names = ckpt.names
        if pm is None:
            raise invalid(f"no preset claims any tensor of {checkpoint}; write a rules file and pass --rules")
        if print_rules:
            click.echo(pm.to_text(), nl=False)
            return
        groups: dict[str, dict] = {}
        for name in names:
            m = pm.modality_of(name) or "unclaimed"
            g = groups.setdefault(m, {"tensors": 0, "params": 0, "examples": []})
            g["tensors"] += 1
            g["params"] += ckpt.specs[name].numel
            if len(g["examples"]) < examples:
                g["examples"].append(name)
    order = ["vision", "language", "action", "other", "unclaimed"]
    result = {"checkpoint": str(checkpoint), "partition": pm.name, "modalities": {m: groups[m] for m in order if m in groups}}

    def text(r):
        lines = [f"partition {r['partition']} over {r['checkpoint']}:"]
        for m, g in r["modalities"].items():
            lines.append(f"  {m:<9} {g['tensors']:>6} tensors {g['params']:>14,} params")
            lines.extend(f"      {n}" for n in g["examples"])
        if "unclaimed" in r["modalities"]:
            lines.append("  unclaimed tensors make a merge fail unless the alpha gives other=VALUE")
        return "\n".join(lines)

    emit(result, as_json, text)
