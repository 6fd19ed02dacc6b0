"""Seeded, deterministic behaviour cloning: used by `pretrain` and by finetuning in `learn`.

Data are demo frames (retain.frames; any object with the fields of the simulator's LeRobot `DemoData`):
each training sample is one frame's image, state and instruction with the chunk of the next K
demonstrated actions as the target (padded and masked past the episode's end).

Determinism: the same seed, data, thread count and code give the same weights bit for bit.
Batches are drawn by a seeded torch.Generator, torch runs with deterministic algorithms and a
fixed number of threads (`threads`, recorded in recipes), and nothing reads the global RNG.

Example:
    >>> data = frames_from(read_dataset("demos/plates"))
    >>> report = train_bc(model, adapter, data, steps=500, lr=3e-4, batch_size=64, seed=0)
    >>> report = train_bc(model, adapter, data, 500, 3e-4, 64, 0, mix=(pretrain_data, 0.5))  # co-FT
"""
from __future__ import annotations

import contextlib
import dataclasses
import math
import time
from typing import TYPE_CHECKING, Any, Iterator, Mapping, Optional, Protocol, Sequence

from registry.errors import invalid
from retain.policies.adapter import PolicyAdapter
from retain.progress import progress_bar

if TYPE_CHECKING:
    from retain.frames import DemoFrames
    from retain.train_state import TrainState


@dataclasses.dataclass
class TrainReport:
    steps: int
    seconds: float
    first_loss: float
    final_loss: float  # mean over the last 10% of steps
    losses: list[float]  # one per `log_every` steps (the mean since the previous)


FILL_NEW_MEMORY = False  # torch's NaN fill of new tensors inside deterministic_torch (True: torch's default)


@contextlib.contextmanager
def deterministic_torch(threads: int, device: str = "cpu") -> Iterator[None]:
    """Fixed thread count and deterministic kernels for the duration; restores the old settings.

    Deterministic mode also fills every new tensor's memory with NaN by default, a debugging aid
    that changes no result (every kernel writes its output before anything reads it) and costs
    time: 1,250 fills a default-config step, 8% of self CPU time under the profiler, 2-6% of wall
    time (benchmarks/train_step.py). It stays off unless FILL_NEW_MEMORY says otherwise.

    On a GPU, the kernels that have a deterministic version use it (cuBLAS needs a fixed workspace
    for that, set here before its first use) and attention runs as plain matrix products (the
    fused memory-efficient kernel's backward adds in no fixed order), so a run repeats bit for bit
    on the same GPU model and software; an op without a deterministic version warns, not fails."""
    import os

    import torch
    import torch.utils.deterministic as det

    cuda = device.startswith("cuda")
    if cuda:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    old = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
           torch.is_deterministic_algorithms_warn_only_enabled(), det.fill_uninitialized_memory)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True, warn_only=cuda)
    det.fill_uninitialized_memory = FILL_NEW_MEMORY
    try:
        if cuda:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            with sdpa_kernel(SDPBackend.MATH):
                yield
        else:
            yield
    finally:
        torch.set_num_threads(old[0])
        torch.use_deterministic_algorithms(old[1], warn_only=old[2])
        det.fill_uninitialized_memory = old[3]


def lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up, then cosine decay to a tenth of `lr`."""
    if step < warmup:
        return lr * (step + 1) / warmup
    t = (step - warmup) / max(steps - warmup, 1)
    return lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def format_lr_scale(scales: Mapping[str, float]) -> str:
    """The canonical text of parsed scales (sorted), as recipes record it."""
    return ",".join(f"{k.removesuffix('.') if k.count('.') == 1 and k.endswith('.') else k}={v:g}" for k, v in sorted(scales.items()))


def parse_lr_scale(text: str | None) -> dict[str, float]:
    """'vision=0.1,action=0.5' -> {"vision.": 0.1, "action.": 0.5}: a module name (vision) stands for
    its parameters (prefix "vision."); a name with a dot is a parameter-name prefix as given."""
    out: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        name, eq, value = part.partition("=")
        try:
            scale = float(value)
        except ValueError:
            scale = float("nan")
        if not eq or not name.strip() or not scale > 0:
            raise invalid(f"bad learning-rate scale {part!r}; write NAME=FACTOR with a positive factor, e.g. vision=0.1")
        name = name.strip()
        out[name if "." in name else name + "."] = scale
    return out


def check_lr_scale(scales: Mapping[str, float], names: Sequence[str]) -> None:
    """Refuse a scale that is not positive or whose prefix starts no parameter name (it would
    silently scale nothing)."""
    for prefix, scale in scales.items():
        if not scale > 0:
            raise invalid(f"learning-rate scale {scale} for {prefix!r} must be positive; use e.g. vision=0.1")
        if not any(n.startswith(prefix) for n in names):
            raise invalid(f"learning-rate scale names {prefix!r}, which starts no parameter name; use a prefix such as vision.")


def _param_groups(named: Sequence[tuple[str, Any]], weight_decay: float, lr_scale: Mapping[str, float] | None) -> list[dict]:
    """AdamW groups: weight decay on matrices only, and one group per learning-rate multiplier.
    Without multipliers this is exactly two groups, as recipes recorded before `lr_scale` trained."""
    check_lr_scale(lr_scale or {}, [n for n, _ in named])
    prefixes = sorted((lr_scale or {}).items(), key=lambda kv: -len(kv[0]))
    groups: dict[tuple[bool, float], list] = {}
    for n, p in named:
        scale = next((s for prefix, s in prefixes if n.startswith(prefix)), 1.0)
        groups.setdefault((p.ndim >= 2, float(scale)), []).append(p)
    order = sorted(groups, key=lambda k: (not k[0], k[1] != 1.0, k[1]))  # decay before no-decay, scale 1 first
    return [{"params": groups[k], "weight_decay": weight_decay if k[0] else 0.0, "lr_scale": k[1]} for k in order]


class CheckpointHook(Protocol):
    """Where and when a long run saves its state (retain.pretrain's run folders implement it)."""

    def due(self, steps_done: int) -> bool: ...

    def save(self, state: "TrainState") -> None: ...


def train_bc(
    model,
    adapter: PolicyAdapter,
    data_sources: DemoFrames | Any | Sequence[Any],
    steps: int,
    lr: float,
    batch_size: int,
    seed: int,
    mix: tuple[Any, float] | Sequence[tuple[Any, float]] | None = None,
    *,
    threads: int = 2,
    weight_decay: float = 0.01,
    warmup: int | None = None,
    log_every: int = 50,
    progress: bool = False,
    targets: bool = False,
    lr_scale: Mapping[str, float] | None = None,
    device: str = "cpu",
    bf16: bool = False,
    compile: bool = False,
    resume: Optional["TrainState"] = None,
    checkpoint: Optional[CheckpointHook] = None,
) -> TrainReport:
    """Train `model` in place by behaviour cloning and return the loss curve.

    Args:
        data_sources: demo frames (one or a list; DemoFrames or the simulator's DemoData).
        steps, lr, batch_size, seed: the usual; AdamW with warm-up and cosine decay.
        mix: optional `(frames, ratio)`, or a list of them: that fraction of each batch comes
            from `frames` (the pretraining data when co-finetuning, earlier skills' demos when
            rehearsing, relabelled policy states in pretraining's DAgger stage: DemoFrames or
            ChunkFrames); None trains on `data_sources` alone.
        threads: torch threads; part of the recipe because it can change float rounding.
        targets: hand the data's privileged TARGET positions to the loss (pretraining on
            simulator demos); finetuning leaves them out, as a real robot's demos have none.
        lr_scale: parameter-name prefix -> multiplier of the learning rate (e.g. {"vision.": 0.1}:
            the vision encoder learns ten times slower); the longest matching prefix wins.
        device: "cpu" or "cuda:N" (retain.device.resolve_device); the data move there whole and
            the model trains there, then comes back to the CPU.
        bf16: bf16 autocast of the forward pass (CUDA only).
        compile: the loss calls the model through torch.compile (on CUDA mode "reduce-overhead":
            CUDA graphs replay the step's kernels without a launch each; on the CPU the default
            mode). Parameters, optimizer, checkpoints and saving keep the plain model.
        resume: a checkpoint's state: continue after its step, as if never stopped.
        checkpoint: asked after every step whether to save, and handed the state when so.
    """
    import torch

    from retain.batches import Prefetcher, Sampler
    from retain.frames import concat_frames, frames_from
    from retain.train_state import capture, restore

    if steps < 1 or batch_size < 1 or lr <= 0:
        raise invalid(f"training needs steps >= 1, batch_size >= 1 and lr > 0; got steps={steps}, batch_size={batch_size}, lr={lr}")
    if bf16 and not device.startswith("cuda"):
        raise invalid("bf16 autocast runs on a GPU only; train on a CUDA device or without bf16")
    sources = data_sources if isinstance(data_sources, (list, tuple)) else [data_sources]
    chunk = model.cfg.chunk if hasattr(model, "cfg") else 1
    encoder = getattr(adapter, "encode_instructions", None)
    encode = None if encoder is None else (lambda texts: encoder(model, texts))
    parts = [(Sampler(concat_frames([frames_from(s) for s in sources]), chunk, targets, device, encode), 0)]
    pairs = [] if mix is None else [mix] if isinstance(mix, tuple) else list(mix)
    for mix_data, ratio in pairs:
        if not 0.0 <= ratio < 1.0:
            raise invalid(f"co-training mix ratio {ratio} must be in [0, 1); it is the share of pretraining data per batch")
        n = int(round(ratio * batch_size))
        if n:
            parts.append((Sampler(mix_data, chunk, targets, device, encode), n))
    n_mix = sum(n for _, n in parts)
    if n_mix >= batch_size:
        raise invalid(f"the mixed-in shares {' + '.join(f'{r:g}' for _, r in pairs)} leave none of the batch of {batch_size} "
                      "for the demos; lower them so they sum below 1")
    parts[0] = (parts[0][0], batch_size - n_mix)  # the demos first, then each mixed-in source: the draw order recipes replay
    warmup = max(1, min(100, steps // 10)) if warmup is None else warmup
    tail_from = steps - max(1, steps // 10)  # final_loss: the mean over the last 10% of steps

    with deterministic_torch(threads, device):
        model.to(device)
        gen = torch.Generator().manual_seed(seed)
        # under DDP the names carry the wrapper's "module." prefix; scales name the policy's own
        named = [(n.removeprefix("module."), p) for n, p in model.named_parameters() if p.requires_grad]
        params = [p for _, p in named]
        fused = {"fused": True} if device.startswith("cuda") else {}  # the CPU keeps the loop its recipes were made with
        opt = torch.optim.AdamW(_param_groups(named, weight_decay, lr_scale), lr=lr, betas=(0.9, 0.95), **fused)
        log: dict[str, Any] = {"first_loss": None, "losses": [], "window": [], "tail": [], "seconds": 0.0}
        start = 0
        if resume is not None:
            restore(resume, model, opt, gen)
            start, log = resume.step, dict(resume.log)
        model.train()
        # the compiled forward shares the model's parameters; everything else keeps `model` itself,
        # so no state dict, checkpoint or saved weight carries the wrapper's "_orig_mod." names
        cuda_graphs = compile and device.startswith("cuda")
        forward = torch.compile(model, mode="reduce-overhead" if cuda_graphs else None, dynamic=False) if compile else model
        t0 = time.perf_counter() - log["seconds"]
        bar = progress_bar(steps, "train", unit="steps", show=progress, initial=start)
        started = time.perf_counter()
        pending: list = []  # this step's and earlier unread losses, still on the device

        def read(upto: int) -> None:
            """Bring the pending losses to the host (one sync) and log them; `upto` steps are done."""
            values = torch.stack(pending).tolist() if pending else []
            for i, value in enumerate(values):
                at = upto - len(values) + i
                if not math.isfinite(value):
                    raise invalid(f"training diverged at step {at} (loss {value}); lower the learning rate")
                log["first_loss"] = value if log["first_loss"] is None else log["first_loss"]
                log["window"].append(value)
                if at >= tail_from:
                    log["tail"].append(value)
                if len(log["window"]) == log_every or at == steps - 1:
                    log["losses"].append(sum(log["window"]) / len(log["window"]))
                    log["window"] = []
            pending.clear()

        # a GPU gets its batches built ahead in a thread, so it never waits on Python; on the CPU a
        # batch costs 0.1 ms of a 300 ms step (the gathers) and a second thread would only compete
        # for the cores the step runs on, so there they are built in turn
        with Prefetcher(parts, gen, start, steps, depth=0 if device == "cpu" else 3) as batches:
            for step, (batch, gen_state) in enumerate(batches, start):
                for group in opt.param_groups:
                    group["lr"] = lr_at(step, steps, lr, warmup) * group["lr_scale"]
                if cuda_graphs:
                    torch.compiler.cudagraph_mark_step_begin()  # the last step's graph outputs may be overwritten
                with torch.autocast("cuda", dtype=torch.bfloat16, enabled=bf16):
                    loss, _ = adapter.loss(forward, batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                kept = loss.detach().float()
                pending.append(kept.clone() if compile else kept)  # a CUDA graph's replay would overwrite it
                done = step + 1
                save = checkpoint is not None and done < steps and checkpoint.due(done)
                logged = len(log["window"]) + len(pending) >= log_every
                if save or logged or done == steps:
                    read(done)
                if bar is not None:
                    if logged and log["losses"]:
                        rate = (done - start) * batch_size / max(time.perf_counter() - started, 1e-9)
                        bar.set_postfix(loss=f"{log['losses'][-1]:.4f}", samples_s=f"{rate:,.0f}")
                    bar.update(1)
                if save:
                    log["seconds"] = time.perf_counter() - t0
                    checkpoint.save(capture(model, opt, gen_state, done, log))
        if bar is not None:
            bar.close()
    model.eval()
    model.to("cpu")
    tail = log["tail"]
    return TrainReport(steps, time.perf_counter() - t0, log["first_loss"], sum(tail) / len(tail), log["losses"])
