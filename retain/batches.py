"""Training batches: drawn by a seeded generator, gathered where the model runs, prepared ahead.

A `Sampler` holds one data source as whole tensors on the training device (uint8 images
included, so a GPU gathers and normalises its own batches and the host copies nothing but the
indices) and builds a batch from a vector of frame indices. Instructions are encoded once per
distinct instruction (the adapter's optional `encode_instructions`), then gathered per frame.

`Prefetcher` draws the indices of every step from the one seeded torch.Generator, in step order,
and builds the batches in a background thread a few steps ahead of the training loop. What a batch
holds depends only on the generator's sequence, never on timing, so the CPU path gives the same
bytes as drawing in the loop; each batch comes with the generator state after its draw, which is
what a checkpoint stores as the data cursor.

Example:
    >>> main = Sampler(frames, chunk=8, targets=True, device="cuda:0")
    >>> with Prefetcher([(main, 48)], gen, steps=100) as batches:
    ...     for batch, gen_state in batches: ...
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable, Iterator, Mapping, Optional, Sequence

import numpy as np

from registry.errors import invalid
from retain.policies.adapter import ACTION, ACTION_IS_PAD, IMAGE, INSTRUCTION, STATE, TARGET

Encode = Callable[[Sequence[str]], Mapping[str, Any]]  # distinct instructions -> tensors keyed by batch key, (n, ...)


def _tensor(a: np.ndarray, device: str):
    import torch

    a = np.ascontiguousarray(a)
    return torch.from_numpy(a if a.flags.writeable else a.copy()).to(device)  # read-only: torch wants writable memory


class Sampler:
    """One data source (DemoFrames, the simulator's DemoData, or retain.frames.ChunkFrames) ready
    to batch on `device`; `batch(idx)` is the loss's batch of those frames (keys of adapter.py).

    On the CPU it gathers with numpy, as a single thread: torch's indexing would start a team of
    OpenMP threads in whichever thread builds the batch, competing with training's own. On a GPU
    the arrays live there as tensors and the GPU gathers."""

    def __init__(self, data: Any, chunk: int, targets: bool = False, device: str = "cpu", encode: Optional[Encode] = None):
        from retain.frames import ChunkFrames, chunk_targets, frames_from

        if isinstance(data, ChunkFrames):
            if len(data) == 0:
                raise invalid("no relabelled frames to train on")
            if data.chunks.shape[1] != chunk:
                raise invalid(f"relabelled chunks hold {data.chunks.shape[1]} actions but the policy predicts {chunk}")
            texts, text_index = np.unique(np.asarray(data.instructions, dtype=np.str_), return_inverse=True)
            texts, chunks, pad = [str(t) for t in texts], data.chunks, data.pad
        else:
            data = frames_from(data)
            if len(data) == 0:
                raise invalid("no demo frames to train on; collect demos first")
            idx, pad = chunk_targets(data.episode_index, chunk)
            texts, text_index, chunks = list(data.tasks), data.task_index, data.action[idx]  # (N, K, A)
        self.data = data
        self.device = device
        self.texts = texts
        self.text_index = np.asarray(text_index, dtype=np.int64).reshape(-1)  # (N,) into texts
        self.arrays = {IMAGE: data.images, STATE: data.state, ACTION: chunks, ACTION_IS_PAD: pad}  # uint8 (N, H, W, 3) ...
        if targets and data.target is not None:
            self.arrays[TARGET] = data.target
        self.encoded: dict[str, Any] = {}
        if encode is not None:  # per distinct instruction (n_texts, ...), gathered per frame by text_index
            self.encoded = {k: v.to(device) for k, v in encode(texts).items()}
            if device == "cpu":
                self.encoded = {k: v.numpy() for k, v in self.encoded.items()}
        if device != "cpu":
            self.arrays = {k: _tensor(v, device) for k, v in self.arrays.items()}
            self.text_index_t = _tensor(self.text_index, device)

    def __len__(self) -> int:
        return len(self.text_index)

    def take(self, idx) -> dict[str, Any]:
        """Frames `idx` (CPU indices): numpy arrays on the CPU, tensors on a GPU, and the instructions."""
        idx = np.asarray(idx, dtype=np.int64)
        out: dict[str, Any] = {INSTRUCTION: [self.texts[t] for t in self.text_index[idx]]}
        if self.device == "cpu":
            which = self.text_index[idx]
            out.update({k: v[idx] for k, v in self.arrays.items()})
            out.update({k: v[which] for k, v in self.encoded.items()})
            return out
        import torch

        i = torch.from_numpy(idx).pin_memory().to(self.device, non_blocking=True)
        out.update({k: v[i] for k, v in self.arrays.items()})
        if self.encoded:
            which = self.text_index_t[i]
            out.update({k: v[which] for k, v in self.encoded.items()})
        return out

    def batch(self, idx) -> dict[str, Any]:
        """The loss's batch of frames `idx` (tensors on the device)."""
        return to_tensors(self.take(idx))


def to_tensors(parts: dict[str, Any]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(v) if isinstance(v, np.ndarray) else v for k, v in parts.items()}


def merge_batches(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """One batch of two: instructions joined, arrays or tensors concatenated; keys of only one side dropped."""
    import torch

    def cat(x, y):
        return np.concatenate([x, y]) if isinstance(x, np.ndarray) else torch.cat([x, y])

    return {k: (a[k] + b[k]) if k == INSTRUCTION else cat(a[k], b[k]) for k in a if k in b}


def draw(parts: Sequence[tuple[Sampler, int]], gen) -> dict[str, Any]:
    """One batch: `n` frames of each sampler in order, indices drawn from `gen` in that order."""
    import torch

    batch = None
    for sampler, n in parts:
        b = sampler.take(torch.randint(len(sampler), (n,), generator=gen).numpy())
        batch = b if batch is None else merge_batches(batch, b)
    assert batch is not None
    return to_tensors(batch)


_DONE = object()


class Prefetcher:
    """Batches of steps [start, steps) built `depth` steps ahead in a daemon thread (0: in the
    caller's thread, when asked); iterate to get (batch, generator state after drawing it).
    Leaving the `with` block stops the thread."""

    def __init__(self, parts: Sequence[tuple[Sampler, int]], gen, start: int, steps: int, depth: int = 3):
        self.parts, self.gen, self.start, self.steps, self.depth = list(parts), gen, start, steps, depth
        self.queue: queue.Queue = queue.Queue(maxsize=max(depth, 1))
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="retain-batches", daemon=True)

    def __enter__(self) -> "Prefetcher":
        if self.depth:
            self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        while self.thread.is_alive():  # unblock a producer waiting on a full queue
            try:
                self.queue.get_nowait()
            except queue.Empty:
                pass
            self.thread.join(timeout=0.05)

    def _put(self, item) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        try:
            for _ in range(self.start, self.steps):
                item = (draw(self.parts, self.gen), self.gen.get_state())
                if not self._put(item):
                    return
            self._put(_DONE)
        except BaseException as e:  # handed to the training loop, which raises it there
            self._put(e)

    def __iter__(self) -> Iterator[tuple[dict[str, Any], Any]]:
        if not self.depth:  # in the caller's thread, one step at a time
            for _ in range(self.start, self.steps):
                yield draw(self.parts, self.gen), self.gen.get_state()
            return
        while True:
            item = self.queue.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
