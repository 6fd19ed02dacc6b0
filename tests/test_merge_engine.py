"""The merge arithmetic and streaming, through the public `merge_checkpoints` API."""
import pytest
import torch

from merge_testkit import adversarial, read, same_bits, write
from registry.checkpoint import open_checkpoint, weight_hash
from registry.errors import RegistryError
from retain.merge import merge_checkpoints

FLOATS = [torch.bfloat16, torch.float16, torch.float32, torch.float64]


def _ref(pre, fts, alphas):
    """pre + sum_i a_i * (ft_i - pre) in float32 (float64 for F64), rounded once; zero alphas dropped."""
    cd = torch.float64 if pre.dtype == torch.float64 else torch.float32
    terms = [(f, a) for f, a in zip(fts, alphas) if a != 0]
    if not terms:
        return pre
    if len(terms) == 1 and terms[0][1] == 1:
        return terms[0][0]
    p = pre.to(cd)
    total = None
    for f, a in terms:
        t = (f.to(cd) - p) * a
        total = t if total is None else total + t
    return (total + p).to(pre.dtype)


def _model(dtype, seed, shift=0.05):
    g = torch.Generator().manual_seed(seed)
    pre = {
        "vision.conv.weight": torch.randn(16, 3, 5, 5, generator=g).to(dtype),
        "language.embed.weight": torch.randn(300, 24, generator=g).to(dtype),
        "action.head.bias": torch.randn(7, generator=g).to(dtype),
        "action.step": torch.tensor([12], dtype=torch.int64),
    }
    ft = {k: (v.double() + shift * torch.randn(v.shape, generator=g, dtype=torch.float64)).to(dtype) if v.is_floating_point() else v.clone()
          for k, v in pre.items()}
    return pre, ft


@pytest.mark.parametrize("dtype", FLOATS)
@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_endpoints_are_bit_exact_even_on_adversarial_values(tmp_path, dtype, alpha):
    pre, ft = adversarial(dtype, 5000, seed=11, nonfinite=True)
    write(tmp_path / "pre.safetensors", {"vision.x": pre})
    write(tmp_path / "ft.safetensors", {"vision.x": ft})
    merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [alpha], None, tmp_path / "out.safetensors")
    out = read(tmp_path / "out.safetensors")["vision.x"]
    assert same_bits(out, ft if alpha == 1.0 else pre)


def test_float_arithmetic_alone_would_miss_the_endpoints():
    # Why endpoints are copied, not computed: these cases are not reproduced by pre + 1 * (ft - pre).
    pre, ft = adversarial(torch.bfloat16, 200, seed=1)
    computed = (pre.float() + (ft.float() - pre.float()) * 1.0).bfloat16()
    assert not same_bits(computed, ft)  # e.g. pre=max, ft=1e-3: the difference rounds, 0.001 is lost
    p32 = torch.tensor([1.0, 0.0], dtype=torch.float32)
    f32 = torch.tensor([1e-8, -0.0], dtype=torch.float32)
    assert not same_bits(p32 + (f32 - p32), f32)


@pytest.mark.parametrize("dtype", FLOATS)
def test_per_modality_alpha_matches_reference(tmp_path, dtype):
    pre, ft = _model(dtype, seed=2)
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    report = merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"],
                               ["vision=1,language=0.3,action=0"], "builtin", tmp_path / "out.safetensors", chunk_elems=1000)
    out = read(tmp_path / "out.safetensors")
    assert same_bits(out["vision.conv.weight"], ft["vision.conv.weight"])
    assert same_bits(out["language.embed.weight"], _ref(pre["language.embed.weight"], [ft["language.embed.weight"]], [0.3]))
    assert not same_bits(out["language.embed.weight"], pre["language.embed.weight"])
    assert same_bits(out["action.head.bias"], pre["action.head.bias"])
    assert torch.equal(out["action.step"], pre["action.step"])
    assert report.modalities["language"].tensors == 1 and report.modalities["language"].alphas == [0.3]
    assert report.copied_from_finetuned == 1 and report.copied_from_pre == 1


def test_n_way_task_arithmetic(tmp_path):
    pre, ft1 = _model(torch.bfloat16, seed=3)
    g = torch.Generator().manual_seed(4)
    ft2 = {k: (v.float() + 0.1 * torch.randn(v.shape, generator=g)).to(v.dtype) if v.is_floating_point() else v for k, v in pre.items()}
    for name, t in [("pre", pre), ("ft1", ft1), ("ft2", ft2)]:
        write(tmp_path / f"{name}.safetensors", t)
    merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft1.safetensors", tmp_path / "ft2.safetensors"],
                      ["0.5", "vision=0.2,language=0.7,action=0"], "builtin", tmp_path / "out.safetensors", chunk_elems=999)
    out = read(tmp_path / "out.safetensors")
    for name, a2 in [("vision.conv.weight", 0.2), ("language.embed.weight", 0.7)]:
        assert same_bits(out[name], _ref(pre[name], [ft1[name], ft2[name]], [0.5, a2])), name
    # action: ft2's alpha is 0, so its term is dropped and the result is the two-model merge
    assert same_bits(out["action.head.bias"], _ref(pre["action.head.bias"], [ft1["action.head.bias"]], [0.5]))


def test_chunking_and_sharding_do_not_change_the_bytes(tmp_path):
    pre, ft = _model(torch.bfloat16, seed=5)
    write(tmp_path / "pre", pre, max_shard_bytes=5000)
    write(tmp_path / "ft", ft, max_shard_bytes=9000)
    write(tmp_path / "pre1.safetensors", pre)
    write(tmp_path / "ft1.safetensors", ft)
    merge_checkpoints(tmp_path / "pre", [tmp_path / "ft"], [0.37], None, tmp_path / "a", max_shard_bytes=4000, chunk_elems=7)
    merge_checkpoints(tmp_path / "pre1.safetensors", [tmp_path / "ft1.safetensors"], [0.37], None, tmp_path / "b.safetensors")
    a, b = open_checkpoint(tmp_path / "a"), open_checkpoint(tmp_path / "b.safetensors")
    assert len(a.files) > 1 and (tmp_path / "a" / "model.safetensors.index.json").exists()
    assert weight_hash(a) == weight_hash(b)


def test_deterministic_bytes(tmp_path):
    pre, ft = _model(torch.float16, seed=6)
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    for out in ("x.safetensors", "y.safetensors"):
        merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [0.61], None, tmp_path / out)
    assert (tmp_path / "x.safetensors").read_bytes() == (tmp_path / "y.safetensors").read_bytes()


def test_unclaimed_tensors_need_other(tmp_path):
    pre, ft = _model(torch.float32, seed=7)
    pre["extra.w"] = torch.ones(3)
    ft["extra.w"] = torch.ones(3) * 2
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    args = (tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"])
    with pytest.raises(RegistryError, match="1 tensors match no rule of partition 'builtin' \\(e.g. extra.w\\); add other=VALUE"):
        merge_checkpoints(*args, ["vision=1,language=1,action=1"], "builtin", tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    merge_checkpoints(*args, ["vision=1,language=1,action=1,other=0.5"], "builtin", tmp_path / "o.safetensors")
    assert torch.equal(read(tmp_path / "o.safetensors")["extra.w"], torch.ones(3) * 1.5)
    with pytest.raises(RegistryError, match="needs a partition map"):
        merge_checkpoints(*args, ["vision=1,language=1,action=1"], None, tmp_path / "p.safetensors")


def test_non_float_tensors_must_be_equal(tmp_path):
    pre, ft = _model(torch.float32, seed=8)
    ft["action.step"] = torch.tensor([13])
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    with pytest.raises(RegistryError, match="non-float tensors differ between checkpoints: action.step"):
        merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [0.5], None, tmp_path / "o.safetensors")
    assert not (tmp_path / "o.safetensors").exists()
    r = merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [0.5], None, tmp_path / "o.safetensors",
                          on_mismatch="take-finetuned")
    assert read(tmp_path / "o.safetensors")["action.step"].tolist() == [13] and r.taken_finetuned == ["action.step"]


def test_mismatched_keys_shapes_dtypes(tmp_path):
    pre, ft = _model(torch.float32, seed=9)
    ft["action.new"] = torch.ones(2)
    del ft["action.head.bias"]
    ft["vision.conv.weight"] = ft["vision.conv.weight"].reshape(16, 75)
    ft["language.embed.weight"] = ft["language.embed.weight"].half()
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    args = (tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [0.5], None)
    with pytest.raises(RegistryError) as e:
        merge_checkpoints(*args, tmp_path / "o.safetensors")
    msg = str(e.value)
    for needle in ("action.new (only in", "action.head.bias (missing from", "vision.conv.weight (shape [16, 3, 5, 5] vs [16, 75]",
                   "language.embed.weight (dtype F32 vs F16", "--on-mismatch take-finetuned"):
        assert needle in msg
    r = merge_checkpoints(*args, tmp_path / "o.safetensors", on_mismatch="take-finetuned")
    out = read(tmp_path / "o.safetensors")
    assert set(out) == set(ft)
    for name in ("action.new", "vision.conv.weight", "language.embed.weight"):
        assert same_bits(out[name], ft[name])
    assert r.dropped == ["action.head.bias"]
    assert sorted(r.taken_finetuned) == ["action.new", "language.embed.weight", "vision.conv.weight"]


def test_nan_or_inf_produced_writes_nothing(tmp_path):
    big = torch.finfo(torch.float16).max
    write(tmp_path / "pre.safetensors", {"vision.w": torch.tensor([1.0, big], dtype=torch.float16)})
    write(tmp_path / "ft.safetensors", {"vision.w": torch.tensor([1.0, -big], dtype=torch.float16)})
    with pytest.raises(RegistryError, match="merge produced NaN or inf in tensor vision.w"):
        merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [-0.5], None, tmp_path / "o.safetensors",
                          extrapolate=True)
    assert not (tmp_path / "o.safetensors").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ft.safetensors", "pre.safetensors"]  # no temp files left


def test_existing_output_is_refused(tmp_path):
    pre, ft = _model(torch.float32, seed=10)
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    (tmp_path / "o.safetensors").write_bytes(b"keep")
    with pytest.raises(RegistryError, match="already exists"):
        merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [0.5], None, tmp_path / "o.safetensors")
    assert (tmp_path / "o.safetensors").read_bytes() == b"keep"


def test_fp8_tensors_merge(tmp_path):
    pre = {"vision.w": torch.tensor([0.5, 1.0, -2.0, 0.0]).to(torch.float8_e4m3fn)}
    ft = {"vision.w": torch.tensor([1.0, 1.5, -1.0, 0.25]).to(torch.float8_e4m3fn)}
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], [0.5], None, tmp_path / "o.safetensors")
    out = read(tmp_path / "o.safetensors")["vision.w"]
    assert same_bits(out, _ref(pre["vision.w"], [ft["vision.w"]], [0.5]))


def test_many_small_blocks_through_the_reader_and_writer_threads(tmp_path, monkeypatch):
    import threading

    import retain.merge as merge_mod

    monkeypatch.setattr(merge_mod, "_BLOCK_BYTES", 96)  # dozens of blocks per tensor
    pre, ft = _model(torch.float16, seed=12)
    write(tmp_path / "pre.safetensors", pre)
    write(tmp_path / "ft.safetensors", ft)
    merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "ft.safetensors"], ["vision=0.2,language=0.9,action=1"], "builtin",
                      tmp_path / "o", max_shard_bytes=3000, chunk_elems=5)
    out = read(tmp_path / "o")
    assert same_bits(out["language.embed.weight"], _ref(pre["language.embed.weight"], [ft["language.embed.weight"]], [0.9]))
    assert same_bits(out["vision.conv.weight"], _ref(pre["vision.conv.weight"], [ft["vision.conv.weight"]], [0.2]))
    assert same_bits(out["action.head.bias"], ft["action.head.bias"])
    # a NaN in the middle of a many-block tensor: the threads stop and nothing is left behind
    bad = dict(ft)
    bad["language.embed.weight"] = ft["language.embed.weight"].clone()
    bad["language.embed.weight"][150, 3] = float("nan")
    write(tmp_path / "bad.safetensors", bad)
    with pytest.raises(RegistryError, match="NaN or inf in tensor language.embed.weight"):
        merge_checkpoints(tmp_path / "pre.safetensors", [tmp_path / "bad.safetensors"], [0.5], None, tmp_path / "x",
                          max_shard_bytes=3000, chunk_elems=5)
    assert not (tmp_path / "x").exists() and not list(tmp_path.glob(".x.partial-*"))
    assert not [t.name for t in threading.enumerate() if t.name.startswith("merge-")]  # reader and writer joined


def test_a_file_truncated_while_being_read_is_a_one_line_corrupt_error(tmp_path):
    from retain.streaming import FileReader

    pre, _ = _model(torch.float32, seed=12)
    path = tmp_path / "pre.safetensors"
    write(path, pre)
    with open_checkpoint(path) as ckpt, FileReader() as reader:
        spec = ckpt.specs["language.embed.weight"]
        os_size = path.stat().st_size
        with open(path, "r+b") as f:  # another process cuts the file after its header was checked
            f.truncate(spec.offset + 100)
        out = torch.empty(spec.numel * 4, dtype=torch.uint8)
        with pytest.raises(RegistryError, match="truncated while in use") as e:
            reader.read_into(spec, 0, out)
    assert e.value.exit_code == 7 and "\n" not in str(e.value) and os_size > spec.offset + 100
