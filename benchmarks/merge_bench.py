"""Merge benchmark: our streaming engine vs the naive way vs mergekit, against the I/O floor.

Makes synthetic pi0-like checkpoints (openpi PyTorch names and shapes, bf16, sharded at 2 GB, plus
single-file copies for mergekit) and, per size, measures in one run:

  engine    python cli.py merge PRE/ FT/ --alpha vision=A,language=A,action=A --preset openpi-pi0
            -o OUT --shard-size 2GB (sharded inputs)
  naive     safetensors.torch.load_file both whole, pre + A * (ft - pre) in float32, save_file
  mergekit  mergekit-pytorch linear merge on the single files: weights 1-A and A, normalize false,
            dtype float32, out_dtype bfloat16, --out-shard-size 2B (2 GB shards, as ours)
  floor     cat of both (sharded) inputs to /dev/null, then head -c SIZE /dev/zero > file
  floor_fsync  the same, then `sync file`: the output reaches the disk before the clock stops,
            as it must before our atomic rename (the engine fsyncs every shard)

Each method runs as its own process with the inputs evicted from the page cache first
(posix_fadvise DONTNEED on our own files only, after fsync), so every method starts cold.
Peak RssAnon and VmRSS are sampled from /proc/<pid>/status every 20 ms; max RSS comes from
wait4's rusage. Throughput = (bytes read + bytes written) / wall, with read = 2 x model bytes
and written = model bytes for every method. Our output is then compared with mergekit's tensor
by tensor (at most one bf16 rounding step apart) and with the naive one (bit for bit).

Usage:
    python -m benchmarks.merge_bench --sizes 0.5B,3B --workdir /work/merge-bench \\
        --mergekit /tmp/mk-venv/bin/mergekit-pytorch [--alpha 0.37] [--methods engine,floor] [--keep]
Prints one JSON object, then a table. Deletes the multi-GB files unless --keep.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import numpy as np
import torch

from registry.checkpoint import CheckpointWriter, TensorSpec, bf16_to_float32, open_checkpoint

SHARD = 2_000_000_000

# Shapes after pi0 (PaliGemma 3B: SigLIP So400m + Gemma 2B, plus a 300M Gemma action expert).
CONFIGS = {
    "tiny": dict(vis_w=64, vis_layers=1, vis_mlp=128, lm_w=128, lm_layers=1, lm_mlp=256, lm_heads=1,
                 ex_w=64, ex_layers=1, ex_mlp=128, vocab=1000),  # a smoke test of the script itself
    "0.5B": dict(vis_w=768, vis_layers=8, vis_mlp=3072, lm_w=1024, lm_layers=8, lm_mlp=4096, lm_heads=4,
                 ex_w=512, ex_layers=6, ex_mlp=2048, vocab=257152),
    "3B": dict(vis_w=1152, vis_layers=27, vis_mlp=4304, lm_w=2048, lm_layers=18, lm_mlp=16384, lm_heads=8,
               ex_w=1024, ex_layers=18, ex_mlp=4096, vocab=257152),
}
HEAD = 256


def pi0_shapes(c: dict) -> dict[str, tuple[int, ...]]:
    s: dict[str, tuple[int, ...]] = {}
    v = "paligemma_with_expert.paligemma.model.vision_tower.vision_model."
    s[v + "embeddings.patch_embedding.weight"] = (c["vis_w"], 3, 14, 14)
    s[v + "embeddings.patch_embedding.bias"] = (c["vis_w"],)
    s[v + "embeddings.position_embedding.weight"] = (256, c["vis_w"])
    for i in range(c["vis_layers"]):
        p = f"{v}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s[p + f"self_attn.{proj}.weight"] = (c["vis_w"], c["vis_w"])
            s[p + f"self_attn.{proj}.bias"] = (c["vis_w"],)
        for ln in ("layer_norm1", "layer_norm2"):
            s[p + f"{ln}.weight"] = (c["vis_w"],)
            s[p + f"{ln}.bias"] = (c["vis_w"],)
        s[p + "mlp.fc1.weight"] = (c["vis_mlp"], c["vis_w"])
        s[p + "mlp.fc1.bias"] = (c["vis_mlp"],)
        s[p + "mlp.fc2.weight"] = (c["vis_w"], c["vis_mlp"])
        s[p + "mlp.fc2.bias"] = (c["vis_w"],)
    s[v + "post_layernorm.weight"] = (c["vis_w"],)
    s[v + "post_layernorm.bias"] = (c["vis_w"],)
    s["paligemma_with_expert.paligemma.model.multi_modal_projector.linear.weight"] = (c["lm_w"], c["vis_w"])
    s["paligemma_with_expert.paligemma.model.multi_modal_projector.linear.bias"] = (c["lm_w"],)

    def gemma(prefix: str, w: int, layers: int, mlp: int, heads: int) -> None:
        for i in range(layers):
            p = f"{prefix}layers.{i}."
            s[p + "self_attn.q_proj.weight"] = (heads * HEAD, w)
            s[p + "self_attn.k_proj.weight"] = (HEAD, w)
            s[p + "self_attn.v_proj.weight"] = (HEAD, w)
            s[p + "self_attn.o_proj.weight"] = (w, heads * HEAD)
            s[p + "mlp.gate_proj.weight"] = (mlp, w)
            s[p + "mlp.up_proj.weight"] = (mlp, w)
            s[p + "mlp.down_proj.weight"] = (w, mlp)
            s[p + "input_layernorm.weight"] = (w,)
            s[p + "post_attention_layernorm.weight"] = (w,)
        s[prefix + "norm.weight"] = (w,)

    lm = "paligemma_with_expert.paligemma.model.language_model."
    s[lm + "embed_tokens.weight"] = (c["vocab"], c["lm_w"])
    gemma(lm, c["lm_w"], c["lm_layers"], c["lm_mlp"], c["lm_heads"])
    gemma("paligemma_with_expert.gemma_expert.model.", c["ex_w"], c["ex_layers"], c["ex_mlp"], c["lm_heads"])
    ex = c["ex_w"]
    for name, shape in [("state_proj", (ex, 32)), ("action_in_proj", (ex, 32)), ("action_out_proj", (32, ex)),
                        ("action_time_mlp_in", (ex, 2 * ex)), ("action_time_mlp_out", (ex, ex))]:
        s[name + ".weight"] = shape
        s[name + ".bias"] = (shape[0],)
    return s


def make_checkpoints(work: Path, shapes: dict[str, tuple[int, ...]], seed: int = 0) -> None:
    """pre/ and ft/ (sharded at 2 GB) and pre.safetensors / ft.safetensors, written in one stream."""
    specs = [TensorSpec(n, "BF16", shapes[n]) for n in sorted(shapes)]
    g = torch.Generator().manual_seed(seed)
    pool = (torch.randn(1 << 22, generator=g) * 0.002)  # the finetune step, drawn from a reused pool
    chunk = 1 << 22
    writers = [CheckpointWriter(work / "pre", specs, SHARD), CheckpointWriter(work / "ft", specs, SHARD),
               CheckpointWriter(work / "pre.safetensors", specs, None), CheckpointWriter(work / "ft.safetensors", specs, None)]
    for k, spec in enumerate(specs):
        pre_parts, ft_parts = [], []
        for start in range(0, spec.numel, chunk):
            n = min(chunk, spec.numel - start)
            pre = torch.randn(n, generator=g) * 0.02
            shift = (k * 7919 + start) % (pool.numel() - n + 1)
            ft = (pre + pool[shift: shift + n]).bfloat16()
            pre_parts.append(pre.bfloat16().view(torch.uint8).numpy().tobytes())
            ft_parts.append(ft.view(torch.uint8).numpy().tobytes())
        for w, parts in zip(writers, [pre_parts, ft_parts, pre_parts, ft_parts]):
            w.write_parts(spec.name, parts)
    for w in writers:
        w.commit()


def _files(path: Path) -> list[Path]:
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def evict(*paths: Path) -> None:
    """Drop our own files from the page cache so the next method starts cold."""
    for path in paths:
        if not path.exists():
            continue
        for f in _files(path):
            fd = os.open(f, os.O_RDONLY)
            try:
                os.fsync(fd)
                os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            finally:
                os.close(fd)


def _status(pid: int) -> tuple[int, int]:
    anon = rss = 0
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("RssAnon:"):
                    anon = int(line.split()[1]) * 1024
                elif line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return anon, rss


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except (FileNotFoundError, ProcessLookupError):
            kids = []
        out += kids
        todo += kids
    return out


def _mem_available() -> int:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    return 1 << 62


MIN_AVAILABLE = 1_500_000_000  # kill a method before it starves the shared machine


def measure(cmd: list[str], log: Path, env: dict | None = None) -> dict:
    """Run `cmd` under /usr/bin/time (its %M is the child's true max RSS: a child forked from this
    big Python process would inherit our RSS high-water mark), sampling the process tree's RssAnon."""
    peak = {"anon": 0, "rss": 0}
    rss_file = log.with_suffix(".maxrss")
    with open(log, "w") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], stdout=out,
                                stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        done = threading.Event()

        def sample() -> None:
            while not done.is_set():
                pids = _descendants(proc.pid)
                tree = [_status(p) for p in pids]
                peak["anon"] = max(peak["anon"], sum(a for a, _ in tree))
                peak["rss"] = max(peak["rss"], sum(r for _, r in tree))
                if _mem_available() < MIN_AVAILABLE:
                    peak["killed"] = True
                    for p in pids:
                        try:
                            os.kill(p, 9)
                        except ProcessLookupError:
                            pass
                time.sleep(0.02)

        th = threading.Thread(target=sample, daemon=True)
        th.start()
        proc.wait()
        wall = time.perf_counter() - t0
        done.set()
        th.join()
    if peak.get("killed"):
        return {"skipped": f"killed when the machine's available memory fell below {MIN_AVAILABLE / 1e9:.1f} GB "
                           f"(its RssAnon had reached {peak['anon'] / 1e9:.1f} GB)"}
    if proc.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}); see {log}:\n{log.read_text()[-2000:]}")
    max_rss = int(rss_file.read_text().split()[-1]) * 1024
    return {"wall_s": wall, "peak_rss_anon_bytes": peak["anon"], "peak_vmrss_sampled_bytes": peak["rss"],
            "max_rss_bytes": max_rss}


NAIVE = textwrap.dedent("""
    import sys, glob, torch
    from safetensors.torch import load_file, save_file
    def load(d):
        out = {}
        for f in sorted(glob.glob(d + "/*.safetensors")):
            out.update(load_file(f))
        return out
    pre, ft = load(sys.argv[1]), load(sys.argv[2])
    a = float(sys.argv[4])
    out = {k: (pre[k].float() + a * (ft[k].float() - pre[k].float())).to(pre[k].dtype) for k in pre}
    save_file(out, sys.argv[3], metadata={"format": "pt"})
""")


def _ordered_key(bits: np.ndarray) -> np.ndarray:
    """bf16 bit patterns -> integers in numeric order, so |difference| counts rounding steps."""
    b = bits.astype(np.int32)
    return np.where(b & 0x8000, -(b & 0x7FFF), b)


def _input_step(pre: np.ndarray, ft: np.ndarray) -> np.ndarray:
    """One bf16 rounding step (ulp) at the inputs' scale, max(|pre|, |ft|), as float32."""
    exp = np.maximum((pre >> 7) & 0xFF, (ft >> 7) & 0xFF).astype(np.int32)
    return np.ldexp(np.float32(1), np.maximum(exp, 1) - 127 - 7).astype(np.float32)


def compare(a_path: Path, b_path: Path, pre_path: Path | None = None, ft_path: Path | None = None) -> dict:
    """Tensor-by-tensor comparison in bf16 rounding steps.

    `max_ulp` counts steps at the output's own scale, which blows up where pre and ft nearly
    cancel (a result 1e-5 of its inputs: float32 error on the inputs' scale is many output ulps,
    for both methods). With the inputs given, `max_steps_at_input_scale` measures the difference
    in bf16 steps of max(|pre|, |ft|), the scale float32 arithmetic can be exact to.
    """
    worst, equal, total, worst_in = 0, 0, 0, 0.0
    step = 1 << 24
    cks = [open_checkpoint(p) for p in (a_path, b_path, pre_path, ft_path) if p is not None]
    try:
        a, b = cks[0], cks[1]
        if set(a.specs) != set(b.specs):
            return {"same_names": False}
        for name in a.names:
            arrays = [c.array(name).reshape(-1) for c in cks]
            for s in range(0, arrays[0].size, step):
                x, y = arrays[0][s:s + step], arrays[1][s:s + step]
                d = np.abs(_ordered_key(x) - _ordered_key(y))
                if not d.size:
                    continue
                worst = max(worst, int(d.max()))
                equal += int((d == 0).sum())
                total += d.size
                if len(arrays) == 4 and d.max() > 1:
                    diff = np.abs(bf16_to_float32(x) - bf16_to_float32(y))
                    worst_in = max(worst_in, float((diff / _input_step(arrays[2][s:s + step], arrays[3][s:s + step])).max()))
            del arrays, x, y  # views into the memory maps, which close below
    finally:
        for c in cks:
            c.close()
    out = {"same_names": True, "max_ulp": worst, "fraction_bit_equal": equal / max(total, 1)}
    if pre_path is not None:
        out["max_steps_at_input_scale"] = max(worst_in, float(min(worst, 1)))
    return out


def run_size(label: str, args, work: Path) -> dict:
    shapes = pi0_shapes(CONFIGS[label])
    params = sum(math.prod(s) for s in shapes.values())
    model_bytes = 2 * params
    res: dict = {"size": label, "params": params, "model_bytes": model_bytes, "tensors": len(shapes)}
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    t = time.perf_counter()
    make_checkpoints(work, shapes)
    res["generate_s"] = time.perf_counter() - t
    moved = 3 * model_bytes
    inputs = [work / "pre", work / "ft", work / "pre.safetensors", work / "ft.safetensors"]
    py = sys.executable
    alpha = args.alpha
    a = f"{alpha:g}"
    methods = {
        "engine": [py, "cli.py", "merge", str(work / "pre"), str(work / "ft"), "--alpha", f"vision={a},language={a},action={a}",
                   "--preset", "openpi-pi0", "-o", str(work / "out-engine"), "--shard-size", "2GB", "--quiet"],
        "naive": [py, "-c", NAIVE, str(work / "pre"), str(work / "ft"), str(work / "out-naive.safetensors"), a],
        "mergekit": [args.mergekit, str(work / "mk.yml"), str(work / "out-mergekit"), "--out-shard-size", "2B",
                     "--no-copy-tokenizer"],
        "floor": ["sh", "-c", f"cat {work}/pre/*.safetensors {work}/ft/*.safetensors > /dev/null && "
                              f"head -c {model_bytes} /dev/zero > {work}/out-floor.bin"],
        # the same, but the output is on disk before the clock stops, as our atomic publish needs
        "floor_fsync": ["sh", "-c", f"cat {work}/pre/*.safetensors {work}/ft/*.safetensors > /dev/null && "
                                    f"head -c {model_bytes} /dev/zero > {work}/out-floor.bin && sync {work}/out-floor.bin"],
    }
    (work / "mk.yml").write_text(
        f"merge_method: linear\nmodels:\n  - model: {work / 'pre.safetensors'}\n    parameters: {{weight: {1 - alpha!r}}}\n"
        f"  - model: {work / 'ft.safetensors'}\n    parameters: {{weight: {alpha!r}}}\n"
        "parameters: {normalize: false}\ndtype: float32\nout_dtype: bfloat16\n"
    )
    skip_naive = params > args.skip_naive_above
    for name in args.methods.split(","):
        if name == "naive" and skip_naive:
            res[name] = {"skipped": f"loads ~{3 * model_bytes / 1e9:.0f} GB whole (pre + ft + merged): does not fit next to "
                                    "the other jobs in 24 GiB; estimated from the 0.5B run instead"}
            continue
        if name == "mergekit" and not args.mergekit:
            res[name] = {"skipped": "no --mergekit given"}
            continue
        evict(*inputs)
        r = measure(methods[name], work / f"{name}.log")
        res[name] = r
        if "skipped" in r:
            print(f"[{label}] {name}: {r['skipped']}", file=sys.stderr)
            continue
        r["throughput_MBps"] = moved / r["wall_s"] / 1e6
        print(f"[{label}] {name}: {r['wall_s']:.1f}s peak RssAnon {r['peak_rss_anon_bytes'] / 1e6:.0f} MB", file=sys.stderr)
        outputs = [work / "out-engine", work / "out-naive.safetensors", work / "out-mergekit", work / "out-floor.bin"]
        evict(*outputs)  # flush this method's writes now, untimed, so they do not slow the next one
        if name.startswith("floor"):
            (work / "out-floor.bin").unlink()
    if "engine" in res and "wall_s" in res.get("mergekit", {}):
        res["engine_vs_mergekit"] = compare(work / "out-engine", work / "out-mergekit", work / "pre", work / "ft")
    if "engine" in res and "wall_s" in res.get("naive", {}):
        res["engine_vs_naive"] = compare(work / "out-engine", work / "out-naive.safetensors")
    e = res.get("engine", {})
    if "wall_s" in e:
        if "wall_s" in res.get("mergekit", {}):
            res["throughput_vs_mergekit"] = e["throughput_MBps"] / res["mergekit"]["throughput_MBps"]
        if "wall_s" in res.get("floor", {}):
            res["wall_vs_floor"] = e["wall_s"] / res["floor"]["wall_s"]
        if "wall_s" in res.get("floor_fsync", {}):
            res["wall_vs_floor_fsync"] = e["wall_s"] / res["floor_fsync"]["wall_s"]
    if not args.keep:
        shutil.rmtree(work)
    return res


def table(results: list[dict]) -> str:
    rows = ["| size | method | wall s | MB/s | peak RssAnon MB | max RSS MB |", "|---|---|---|---|---|---|"]
    for r in results:
        for m in ("engine", "naive", "mergekit", "floor", "floor_fsync"):
            x = r.get(m)
            if not x:
                continue
            if "skipped" in x:
                rows.append(f"| {r['size']} | {m} | skipped | | | |")
                continue
            rows.append(f"| {r['size']} | {m} | {x['wall_s']:.1f} | {x['throughput_MBps']:.0f} | "
                        f"{x['peak_rss_anon_bytes'] / 1e6:.0f} | {x['max_rss_bytes'] / 1e6:.0f} |")
    lines = ["\n".join(rows)]
    for r in results:
        bits = [f"{r['size']} ({r['params'] / 1e9:.2f}B params)"]
        if "throughput_vs_mergekit" in r:
            bits.append(f"throughput x{r['throughput_vs_mergekit']:.2f} vs mergekit")
        if "wall_vs_floor" in r:
            bits.append(f"wall x{r['wall_vs_floor']:.2f} of the I/O floor")
        if "wall_vs_floor_fsync" in r:
            bits.append(f"x{r['wall_vs_floor_fsync']:.2f} of the floor with fsync")
        if "engine_vs_mergekit" in r:
            c = r["engine_vs_mergekit"]
            bits.append(f"vs mergekit: {100 * c.get('fraction_bit_equal', 0):.4f}% bit-equal, max {c.get('max_ulp')} bf16 ulp of the "
                        f"output, max {c.get('max_steps_at_input_scale', float('nan')):.3g} bf16 steps at the inputs' scale")
        if "engine_vs_naive" in r:
            c = r["engine_vs_naive"]
            bits.append(f"vs naive: max {c.get('max_ulp')} ulp")
        lines.append("; ".join(bits))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="0.5B,3B")
    ap.add_argument("--methods", default="engine,naive,mergekit,floor,floor_fsync")
    ap.add_argument("--workdir", default="/work/merge-bench")
    ap.add_argument("--mergekit", default=shutil.which("mergekit-pytorch"))
    ap.add_argument("--skip-naive-above", type=float, default=1e9, help="parameter count above which naive is skipped")
    ap.add_argument("--alpha", type=float, default=0.37,
                    help="merge coefficient; not a power of two, so mergekit's (1-a)*pre + a*ft and our pre + a*(ft-pre) can round apart")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    results = []
    for label in args.sizes.split(","):
        results.append(run_size(label, args, Path(args.workdir) / label))
    print(json.dumps({"alpha": args.alpha, "shard_bytes": SHARD, "results": results}, indent=2))
    print(table(results))


if __name__ == "__main__":
    main()
