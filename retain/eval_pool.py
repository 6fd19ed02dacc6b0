"""Simulator evaluations spread over worker processes.

A rollout is a batched forward pass of a small model every few steps, which one torch thread runs
fastest (`EVAL_THREADS`), so a machine with two cores evaluates about twice as fast with two
processes as with one. A job (one checkpoint, one task, one split, all its episodes) runs whole in
one process with the same arithmetic wherever it runs, so scores do not depend on the worker count.

Workers are `python -m retain.eval_pool` children that read one JSON job per line on stdin and
answer one JSON line each. They are not multiprocessing children, so a caller's script is never
re-imported in them (a script without an `if __name__ == "__main__"` guard works) and nothing is
unpickled. They ignore SIGINT (the caller owns Ctrl-C and stops them), are killed when the caller
closes the pool on an error, and exit at end of input, which is also what a killed caller leaves.

Example:
    >>> with EvalPool(workers=2) as pool:
    ...     results = pool.run([EvalJob(config, "/path/to/weights", "plates", "ood:position", 50, 12345)])
"""
from __future__ import annotations

import dataclasses
import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections import deque
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from registry.errors import Code, RegistryError, invalid, unavailable

# Rollouts run small batches: one thread is faster than two (and immune to a busy machine), and a
# fixed count keeps scores reproducible.
EVAL_THREADS = 1
WORKERS_ENV = "RETAIN_EVAL_WORKERS"
MAX_DEFAULT_WORKERS = 8  # more rarely pays on a few dozen jobs
WORKER_MEMORY = 400 * 2**20  # a worker's torch and simulator: 0.4 GB at peak with the shipped base, 50 episodes
MODEL_COPIES = 3  # a loaded model, the file read to load it, and activations of a batch of rollouts


@dataclasses.dataclass(frozen=True)
class EvalJob:
    """All episodes of one task on one split, for the checkpoint at `checkpoint`."""

    config: Mapping[str, Any]  # the version's config: {"policy": name, "policy_config": {...}}
    checkpoint: str
    task: str  # a skill, a pretraining task or "generalist"
    setting: str
    episodes: int
    seed: int
    device: str = "cpu"  # where the policy runs ("cpu" or "cuda:N"); the simulator stays on the CPU


def default_workers(model_bytes: int = 0) -> int:
    """$RETAIN_EVAL_WORKERS, else the cores this process may run on, at most 8 and at most what half
    the available memory holds when every worker loads its own copy of a `model_bytes` checkpoint."""
    text = os.environ.get(WORKERS_ENV, "").strip()
    if text:
        try:
            n = int(text)
        except ValueError:
            n = 0
        if n < 1:
            raise invalid(f"{WORKERS_ENV}={text!r} is not a worker count; set it to a whole number such as 1 or 2")
        return n
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cores = os.cpu_count() or 1
    n = min(cores, MAX_DEFAULT_WORKERS)
    available = _available_memory()
    if available is not None:
        n = min(n, int(available // 2 // (WORKER_MEMORY + MODEL_COPIES * model_bytes)))
    return max(1, n)


def _available_memory() -> Optional[int]:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # not on Linux
        pass
    return None


def run_job(job: EvalJob, model=None):
    """One job in this process (`model`: the checkpoint already loaded, to skip loading it)."""
    from retain.evaluate import evaluate
    from retain.policies import policy_of

    adapter, policy_config = policy_of(job.config)
    if model is None:
        model = adapter.load(Path(job.checkpoint), policy_config)
    model = model.to(job.device)
    return evaluate(model, adapter, job.task, job.setting, job.episodes, job.seed, threads=EVAL_THREADS)


class EvalPool:
    """Runs EvalJobs: in worker processes when there are several workers and jobs, else here.

    Workers start on the first parallel `run` (or on `start()`, to import torch in the background
    while the caller does something else) and live until `close()`.
    """

    def __init__(self, workers: Optional[int] = None, model_bytes: int = 0):
        self.workers = default_workers(model_bytes) if workers is None else int(workers)
        if self.workers < 1:
            raise invalid(f"the evaluation needs at least 1 worker, got {self.workers}")
        self._procs: list[subprocess.Popen] = []
        self._models: dict[str, Any] = {}  # checkpoints loaded in this process, for serial runs

    def __enter__(self) -> "EvalPool":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        self.close(kill=exc_type is not None)

    def start(self) -> None:
        """Start the workers now (they import torch and the simulator) without waiting for them."""
        if self.workers < 2 or self._procs:
            return
        from retain.finetune import child_pythonpath

        env = {**os.environ, "OMP_NUM_THREADS": str(EVAL_THREADS), "PYTHONPATH": child_pythonpath()}
        for _ in range(self.workers):
            self._procs.append(subprocess.Popen([sys.executable, "-m", "retain.eval_pool"], stdin=subprocess.PIPE,
                                                stdout=subprocess.PIPE, env=env))

    def run(self, jobs: Sequence[EvalJob], done: Optional[Callable[[], Any]] = None) -> list:
        """EvalResults in the order of `jobs`; `done()` is called as each job finishes."""
        if self.workers == 1 or len(jobs) < 2:
            results = []
            for j in jobs:
                results.append(run_job(j, self._model(j)))
                if done:
                    done()
            return results
        self.start()
        results: list = [None] * len(jobs)
        queue = deque(enumerate(jobs))
        running: dict[int, int] = {}  # worker -> job index
        try:
            with selectors.DefaultSelector() as sel:
                for w, proc in enumerate(self._procs):
                    sel.register(proc.stdout, selectors.EVENT_READ, w)
                for w in range(len(self._procs)):
                    self._send(w, queue, running)
                while running:
                    for key, _ in sel.select():
                        w = key.data
                        results[running.pop(w)] = self._receive(w)
                        if done:
                            done()
                        self._send(w, queue, running)
        except BaseException:
            self.close(kill=True)  # workers still busy would answer the next run's jobs with this one's
            raise
        return results

    def _send(self, w: int, queue: deque, running: dict[int, int]) -> None:
        if not queue:
            return
        i, job = queue.popleft()
        line = json.dumps(dataclasses.asdict(job)).encode() + b"\n"
        try:
            self._procs[w].stdin.write(line)
            self._procs[w].stdin.flush()
        except BrokenPipeError:
            raise self._died() from None
        running[w] = i

    def _receive(self, w: int):
        from retain.evaluate import EvalResult

        line = self._procs[w].stdout.readline()
        if not line:
            raise self._died()
        answer = json.loads(line)
        if "result" in answer:
            r = answer["result"]
            return EvalResult(**{**r, "outcomes": tuple(r["outcomes"])})
        if "error" in answer:
            raise RegistryError(answer["error"], Code[answer["code"]])
        raise RuntimeError(f"an evaluation worker failed:\n{answer['crash']}")

    @staticmethod
    def _died() -> RegistryError:
        return unavailable(f"an evaluation worker died (killed, or out of memory?); run again, or set {WORKERS_ENV}=1 "
                           "to evaluate in this process")

    def _model(self, job: EvalJob):
        if job.checkpoint not in self._models:
            from retain.policies import policy_of

            adapter, policy_config = policy_of(job.config)
            self._models = {job.checkpoint: adapter.load(Path(job.checkpoint), policy_config)}  # keep one
        return self._models[job.checkpoint]

    def close(self, kill: bool = False) -> None:
        """Stop the workers: at end of input, or at once with `kill` (on errors and Ctrl-C)."""
        self._models = {}
        procs, self._procs = self._procs, []
        for p in procs:
            if kill:
                p.kill()
            for f in (p.stdin, p.stdout):
                try:
                    f.close()
                except OSError:  # the worker is gone already
                    pass
        for p in procs:
            p.wait()


def _serve() -> None:
    """A worker: one JSON job per line on stdin, one JSON answer per line on the original stdout."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_exit_when_orphaned, args=(os.getppid(),), daemon=True).start()
    answers = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever else prints goes to stderr, never into the answers
    for line in sys.stdin:
        try:
            r = run_job(EvalJob(**json.loads(line)))
            answer: dict[str, Any] = {"result": {**dataclasses.asdict(r), "outcomes": [bool(o) for o in r.outcomes]}}
        except RegistryError as e:
            answer = {"error": str(e), "code": e.code.name}
        except Exception:  # a bug: its traceback goes back to the caller, which raises it
            answer = {"crash": traceback.format_exc()}
        try:
            answers.write(json.dumps(answer) + "\n")
            answers.flush()
        except BrokenPipeError:  # the caller closed the pool, or died, while this job ran
            os._exit(0)


def _exit_when_orphaned(parent: int) -> None:
    # end of input only reaches a worker between jobs; a killed caller should not leave a long job running
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


if __name__ == "__main__":
    _serve()
