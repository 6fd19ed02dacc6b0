"""`learn` and `replay`: thin click layers over retain.learn.learn and retain.replay.replay.

torch is imported only inside the command functions, so `retain --help` stays fast.
"""
from __future__ import annotations

from typing import Any, Optional

import click

from registry.cli_support import json_option, registry_from_ctx, to_json
from retain.commands.policy_cmds import device_option
from retain.learn_options import LearnOptions

# Options left unset take LearnOptions' defaults (so the recipe records them); --help shows them.
_DEFAULTS = LearnOptions()


STOP_DEADLINE_S = 60.0  # after Ctrl-C or a kill: the longest clean-up (a DDP finetune's workers: 15 s) and then some


def _interrupt_on_sigterm() -> None:
    """Treat `kill` (SIGTERM) like Ctrl-C, so temporary work and a DDP finetune's workers are
    cleaned up on the way out; nothing is committed either way.

    A KeyboardInterrupt that Python raises while it runs a finaliser is printed as ignored and
    lost; twice, under heavy load, a learn went on training for half an hour after its signal. So
    the first signal also starts a deadline: a run still alive STOP_DEADLINE_S later ends at once
    (exit 130, nothing committed; `gc` removes its work folder, as after a SIGKILL)."""
    import signal
    import threading

    def deadline() -> None:
        import os
        import sys
        import time

        time.sleep(STOP_DEADLINE_S)
        print(f"Interrupted: nothing was committed (the run had not stopped {STOP_DEADLINE_S:g} s after the signal; "
              "`retain gc` removes its work folder).", file=sys.stderr, flush=True)
        os._exit(130)

    def handler(signum, frame):
        if not any(t.name == "retain-stop-deadline" for t in threading.enumerate()):
            threading.Thread(target=deadline, name="retain-stop-deadline", daemon=True).start()
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        before = {sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT)}
        ctx = click.get_current_context(silent=True)
        if ctx is not None:  # a caller running the command in-process (tests) gets its own handlers back
            ctx.call_on_close(lambda: [signal.signal(sig, h) for sig, h in before.items()])


def _pct(rate: float) -> str:
    return f"{100 * rate:.0f}%"


def _cell(row) -> str:
    if row is None:
        return "-"
    if not row.episodes:
        return f"{_pct(row.rate)} (rate only)"
    return f"{_pct(row.rate)} [{_pct(row.low)}-{_pct(row.high)}] {row.successes}/{row.episodes}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header] + rows) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(header, widths)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    return "\n".join("  " + ln for ln in lines)


def _label(skill: Optional[str], split: str, validation: Optional[str], new_skill: Optional[str]) -> str:
    if skill is None:
        return "generalist"
    tag = " (validation)" if split == validation and skill == new_skill else ""
    return f"{skill} {split}{tag}"


def _alpha_text(alpha: Any) -> str:
    from retain.alphas import as_alpha

    return str(as_alpha(alpha, extrapolate=True))


def learn_text(res) -> str:
    out = [f"learned {res.skill}: {res.version.name} (parent {res.parent}, weights {res.version.weight_hash[:19]}...)"]
    cands = [p for p in res.sweep if p.get("role") == "candidate"]
    if cands:
        fam = res.validation_family
        seen = "  ".join(f"{_alpha_text(p['alpha'])}: {_pct(p['scores'][fam]['rate'])}" for p in cands)
        tied = len(cands) > 1 and len({p["scores"][fam]["successes"] for p in cands}) == 1
        why = "every candidate tied, so the one keeping most of the parent" if tied else "ties go to the smaller alpha"
        if res.kept:
            why = f"with the lineage in view: {res.kept['reason']}"
        out.append(f"alpha {_alpha_text(res.alpha)} chosen on {fam} ({why}); sweep: {seen}")
    else:
        out.append(f"alpha {_alpha_text(res.alpha)} (fixed)")
    if res.held_out:
        out.append(f"held-out OOD families (not used to choose alpha): {', '.join(f.split(':', 1)[1] for f in res.held_out)}")
    ft = {(r.skill, r.split): r for r in res.finetuned_scores}
    base = {(r.skill, r.split): r for r in res.parent_scores}
    keys = list(dict.fromkeys([(r.skill, r.split) for r in res.scores] + list(ft)))
    merged = {(r.skill, r.split): r for r in res.scores}
    compared = bool(ft)  # --no-compare: no finetune column to announce
    rows = [[_label(k[0], k[1], res.validation_family, res.skill), _cell(base.get(k)), _cell(merged.get(k))]
            + ([_cell(ft.get(k))] if compared else []) for k in keys]
    if rows:
        plain = ", plain finetune (alpha 1)" if compared else ""
        out.append(f"scores: parent {res.parent} (alpha 0), merged {res.version.name}{plain}; 95% Wilson intervals:")
        out.append(_table(["skill split", f"parent {res.parent}", f"merged {res.version.name}"] + (["finetuned"] if compared else []), rows))
        summary = _ood_summary(res)
        if summary:
            out.append(summary)
    t = res.timings
    out.append("timings: " + ", ".join(f"{k} {v:.1f}s" for k, v in t.items()))
    return "\n".join(out)


def _ood_summary(res) -> str:
    """Pooled held-out OOD success of the merge vs the plain finetune on the new skill."""
    ft = {(r.skill, r.split): r for r in res.finetuned_scores}
    pairs = [(r, ft[(r.skill, r.split)]) for r in res.scores
             if r.skill == res.skill and r.split in res.held_out and (r.skill, r.split) in ft]
    if not pairs:
        return ""
    m = sum(a.successes for a, _ in pairs) / max(1, sum(a.episodes for a, _ in pairs))
    f = sum(b.successes for _, b in pairs) / max(1, sum(b.episodes for _, b in pairs))
    return f"held-out OOD on {res.skill} (pooled over {len(pairs)} families): merged {100 * m:.1f}% vs plain finetune {100 * f:.1f}% ({100 * (m - f):+.1f} pts)"


def _learn_json(res) -> dict:
    return {
        "version": res.version, "parent": res.parent, "skill": res.skill, "alpha": res.alpha,
        "validation_family": res.validation_family, "held_out": res.held_out, "sweep": res.sweep,
        "scores": res.scores, "finetuned_scores": res.finetuned_scores, "parent_scores": res.parent_scores,
        "demo_set_id": res.demo_set_id, "timings": res.timings, "lineage_check": res.kept,
    }


@click.command("learn")
@click.argument("task")
@click.option("--demos", default=None, help="LeRobot-format demo folder or fsspec URL (default: built-in expert demos).")
@click.option("--demos-store", type=click.Choice(["auto", "copy", "reference"]), default="auto", show_default=True,
              help="Keep --demos as a copy in the registry, or by reference (location + file hashes, checked on every "
                   "use); auto: by reference above 1 GiB.")
@click.option("--ref", default="main", show_default=True, help="Learn on top of this ref's head; the ref moves by compare-and-swap.")
@click.option("--mode", type=click.Choice(["task-ft", "co-ft"]), default="task-ft", show_default=True)
@click.option("--mix", type=float, default=None, help="co-ft: share of pretraining data per batch, in [0, 1) (default 0.2).")
@click.option("--rehearse", type=float, default=None,
              help="Share of each batch from the stored demos of skills learned earlier on the ref, in [0, 1) (default 0).")
@click.option("--alpha", default="auto", show_default=True, help="auto, 0.5, or vision=1,language=0.8,action=1.")
@click.option("--alpha-grid", default="0.25,0.5,0.75", show_default=True, help="Candidates for --alpha auto.")
@click.option("--alpha-strategy", "strategy", type=click.Choice(["broad", "language", "grid", "coordinate"]), default="broad",
              show_default=True, help="auto: broad (one alpha for every modality, the language search and per-modality "
                                      "combinations); the language alpha with vision = action = 1 (the paper's, and the "
                                      "default before --keep); one alpha for every modality; or a coordinate search.")
@click.option("--keep", "keep", multiple=True, metavar="TARGET>=THRESHOLD",
              help="What the chosen alpha must keep of the lineage: plates>=0.7, generalist>=0.8x (a share of the "
                   "parent's score), all>=0.8x, or none (repeatable). Default: all>=0.8x whenever a candidate can.")
@click.option("--force", is_flag=True, help="Commit the best trade-off when no candidate meets --keep (else exit 5).")
@click.option("--keep-episodes", type=int, default=None, help="Episodes per earlier skill and suite when checking --keep (default 20).")
@click.option("--val-family", default=None, help="The ONE OOD family alpha is chosen on (default ood:position).")
@click.option("--steps", type=int, default=None, help=f"Finetune steps (default {_DEFAULTS.finetune.steps}).")
@click.option("--lr", type=float, default=None, help=f"Finetune learning rate (default {_DEFAULTS.finetune.lr:g}).")
@click.option("--lr-scale", default=None, help="Learning-rate multipliers by module, e.g. vision=0.1.")
@click.option("--batch-size", type=int, default=None, help=f"Finetune batch in frames (default {_DEFAULTS.finetune.batch_size}).")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--nproc-per-node", "nproc", type=int, default=1, show_default=True, help="Finetune under torchrun/DDP with N processes.")
@click.option("--threads", type=int, default=None,
              help="torch threads per finetune process (default 1; recorded, as it changes float rounding).")
@click.option("--episodes", "-n", type=int, default=None, help=f"Evaluation episodes per (skill, split) (default {_DEFAULTS.episodes}).")
@click.option("--demo-episodes", type=int, default=None, help=f"Built-in demos: expert episodes to collect (default {_DEFAULTS.demo_episodes}).")
@click.option("--no-compare", is_flag=True, help="Do not score the plain finetune beside the merge.")
@click.option("--finetuned", default=None, help="Weights finetuned elsewhere from the head: skips the finetune.")
@click.option("--finetune-cmd", default=None,
              help="Your trainer instead of the built-in finetune: a shell command using {parent} (the head's weights "
                   "+ config.json), {demos} (the dataset), {out} (leave the finetuned safetensors there), {seed}.")
@click.option("--finetune-timeout", type=float, default=None, help="Seconds --finetune-cmd may run before it is stopped.")
@click.option("--preset", default=None, help="Partition preset for --finetuned weights (e.g. openpi-pi0, lerobot-smolvla).")
@click.option("--eval-cmd", default=None, help="Score candidates with your evaluator: 'CMD {checkpoint}' printing JSON.")
@device_option
@click.option("--bf16", is_flag=True, default=None, help="bf16 autocast of the finetune's forward pass (CUDA only; recorded).")
@click.option("--compile", "compile_", is_flag=True, default=None,
              help="torch.compile the finetune's forward (CUDA graphs on a GPU; recorded).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or stage lines.")
@json_option
@click.pass_context
def learn_cmd(ctx: click.Context, task: str, demos, demos_store, ref, mode, mix, rehearse, alpha, alpha_grid, strategy, keep, force,
              keep_episodes, val_family, steps, lr, lr_scale, batch_size,
              seed, nproc, threads, episodes, demo_episodes, no_compare, finetuned, finetune_cmd, finetune_timeout, preset, eval_cmd,
              device, bf16, compile_, quiet, as_json) -> None:
    """Learn a skill on top of a ref's head: finetune, choose alpha, merge, score, commit one version.

    \b
    Examples:
      retain learn plates
      retain learn whiteboard --mode co-ft --mix 0.2 --alpha-grid 0.25,0.5,0.75
      retain learn whiteboard --rehearse 0.2    (keep rehearsing the skills learned before)
      retain learn whiteboard --keep plates>=0.7 --keep generalist>=0.8x
      retain learn whiteboard --alpha-strategy language --keep none   (the choice before --keep)
      retain learn my-skill --demos s3://bucket/demos --alpha language=0.5,vision=1,action=1
      retain learn pick --finetuned ./ft --preset openpi-pi0 --eval-cmd 'python eval.py {checkpoint}'
      retain learn pick --demos ./pick --finetune-cmd 'python train.py {parent} {demos} {out} --seed {seed}' \\
        --eval-cmd 'python eval.py {checkpoint}'
    """
    from retain.learn import learn
    from retain.select import parse_grid

    values = {"mode": mode, "mix": mix, "rehearse": rehearse, "alpha": alpha, "strategy": strategy, "alpha_grid": parse_grid(alpha_grid),
              "keep": tuple(keep), "force": force or None, "keep_episodes": keep_episodes,
              "validation_family": val_family, "steps": steps, "lr": lr, "lr_scale": lr_scale, "batch_size": batch_size, "seed": seed, "nproc": nproc,
              "threads": threads, "episodes": episodes, "demo_episodes": demo_episodes, "compare_finetuned": not no_compare,
              "eval_cmd": eval_cmd, "preset": preset, "finetune_cmd": finetune_cmd, "finetune_timeout": finetune_timeout,
              "bf16": bf16 or None, "compile": compile_ or None}
    from retain.device import select_device

    # the finetune's device (the simulator's rollouts stay on the CPU workers); DDP ranks run on the CPU
    values["device"] = select_device("cpu" if device is None and nproc > 1 else device)
    opts = LearnOptions.of(**{k: v for k, v in values.items() if v is not None})
    _interrupt_on_sigterm()
    with registry_from_ctx(ctx) as reg:
        res = learn(reg, task, opts, demos=demos, ref=ref, finetuned=finetuned, progress=not quiet, demos_store=demos_store)
    click.echo(to_json(_learn_json(res)) if as_json else learn_text(res))


# ---------------------------------------------------------------------------------------- replay


def replay_text(res) -> str:
    if not res.changed:
        out = [f"replay of {' -> '.join(res.tasks)} from {res.start} with the recorded recipes:"]
        for c in res.checks:
            if c.finetune == "reproduced":
                ft = f"finetune reproduced bit for bit ({c.finetuned_hash[:19]}...)"
            elif c.finetune == "rebuilt-from-delta":
                ft = "finetuned outside: weights rebuilt from the stored delta"
            elif c.finetune == "drift-accepted":
                ft = f"your trainer is NOT bit-reproducible, drift accepted: {c.finetune_diff.text() if c.finetune_diff else 'hash differs'}"
            else:
                ft = f"finetune DIFFERS from the record: {c.finetune_diff.text() if c.finetune_diff else 'hash differs'}"
            if c.merge_hash == c.recorded_hash:
                mg = f"merge (alpha {_alpha_text(c.alpha)}) reproduced {c.recorded} bit for bit ({c.recorded_hash[:19]}...)"
            else:
                mg = f"merge (alpha {_alpha_text(c.alpha)}) DIFFERS from {c.recorded}: {c.merge_diff.text() if c.merge_diff else 'hash differs'}"
            out.append(f"  {c.skill} on {c.parent}: {ft}; {mg} [{c.seconds:.1f}s]" + ("" if c.reproduced else c.code_note))
        verdict = ("reproduced every recorded weight hash bit for bit" if res.reproduced else
                   "reproduced every step but where your trainer drifted (accepted)" if res.ok else
                   "NOT reproduced: see the differing step above")
        out.append(verdict + "; nothing was committed.")
        return "\n".join(out)
    out = [f"replayed {' -> '.join(res.tasks)} from {res.start} on branch {res.branch} "
           f"({', '.join(f'{k}={v}' for k, v in res.changes.items())}):"]
    for s in res.steps:
        out.append(f"  {s.skill}: {s.recorded.name} (alpha {_alpha_text(s.recorded_alpha)}) -> {s.new.name} (alpha {_alpha_text(s.alpha)})")
        old = {(r.skill, r.split): r for r in s.recorded_scores}
        new = {(r.skill, r.split): r for r in s.scores}
        keys = list(dict.fromkeys(list(new) + list(old)))
        keys.sort(key=lambda k: (k[0] is None, k[0] or "", k[1] != "id", k[1]))
        rows = [[_label(k[0], k[1], None, None), _cell(old.get(k)), _cell(new.get(k))] for k in keys]
        if rows:
            out.append(_table(["skill split", f"original {s.recorded.name}", f"replay {s.new.name}"], rows))
    return "\n".join(out)


def _replay_json(res) -> dict:
    return {"tasks": res.tasks, "start": res.start, "changed": res.changed, "changes": res.changes, "reproduced": res.reproduced,
            "checks": [{**c.__dict__, "reproduced": c.reproduced} for c in res.checks], "branch": res.branch,
            "steps": res.steps}


@click.command("replay")
@click.argument("tasks")
@click.option("--from", "start", default=None, help="Start from this version (default: where the recorded chain started).")
@click.option("--branch", default=None, help="New branch for a changed chain (default replay-<tasks>-from-<version>).")
@click.option("--alpha", default=None, help="auto (search again), or a fixed alpha; default: the recorded alpha.")
@click.option("--mode", type=click.Choice(["task-ft", "co-ft"]), default=None, help="Default: the recorded mode.")
@click.option("--rehearse", type=float, default=None, metavar="SHARE",
              help="Share of each finetune batch from earlier skills' stored demos; default: the recorded share.")
@click.option("--of", "of", default=None, help="The version that learned the last task (default: its latest learn).")
@click.option("--accept-drift", is_flag=True,
              help="Go on when a --finetune-cmd trainer does not reproduce its recorded finetune bit for bit (reported).")
@click.option("--device", default=None, help="Where the finetunes run: auto, cpu, cuda or cuda:N (default: each step's recorded device).")
@click.option("--quiet", "-q", is_flag=True, help="No progress bars or stage lines.")
@json_option
@click.pass_context
def replay_cmd(ctx: click.Context, tasks: str, start, branch, alpha, mode, rehearse, of, accept_drift, device, quiet, as_json) -> None:
    """Re-run a recorded chain of skills from its stored demos and recipes.

    With nothing changed it verifies the recorded weight hashes bit for bit (exit 5 if a step
    differs, naming it); with another --from, --alpha, --mode or --rehearse it builds the chain
    on a new branch and prints the scores beside the original chain's.

    \b
    Examples:
      retain replay whiteboard
      retain replay plates,whiteboard --from v5 --branch rebased
      retain replay whiteboard --alpha 0.25
      retain replay plates,whiteboard --rehearse 0.2
    """
    from retain.device import select_device
    from retain.replay import ensure_reproduced, replay

    kind = select_device(device) if device is not None else None
    _interrupt_on_sigterm()
    with registry_from_ctx(ctx) as reg:
        res = replay(reg, tasks.split(","), start=start, branch=branch, alpha=alpha, mode=mode, rehearse=rehearse, of=of,
                     progress=not quiet, accept_drift=accept_drift, device=kind)
    click.echo(to_json(_replay_json(res)) if as_json else replay_text(res))
    ensure_reproduced(res)
