"""The built-in VLA: a small vision-language-action policy in one readable file.

Three parts, named so the merge partition is trivial (`vision.*`, `language.*`, `action.*`):

    image (B, H, W, 3) uint8 ──► vision encoder (strided convs) ──► G*G vision tokens (B, G*G, D)
    instruction words ──► token embeddings (B, L, D) ─┐
                                                      ├─► language backbone (transformer) ──► context (B, G*G+L, D)
    vision tokens ────────────────────────────────────┘
    state (B, S) + chunk queries (K) ──► action expert (self-attn + cross-attn to context) ──► actions (B, K, A)

The action expert regresses an action chunk (K future actions) with an L1 loss rather than
flow matching: the simulator's scripted experts are deterministic and unimodal, so a generative
head buys nothing there, and regression needs one forward pass per chunk instead of ~10
denoising steps, which keeps closed-loop evaluation cheap on a CPU. Chunks also let evaluation
replan every `execute` steps instead of every step.
"""
from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from registry.errors import invalid
from retain.policies import tokenizer
from retain.policies.adapter import (
    ACTION,
    ACTION_IS_PAD,
    IMAGE,
    INSTRUCTION,
    STATE,
    TARGET,
    load_state_dict,
    save_state_dict,
)

POLICY_NAME = "builtin-vla"
LANGUAGE_BACKBONES = ("hashed", "minilm")
TOKEN_IDS = "instruction.token_ids"  # (B, L) int64: the trainer's per-instruction encoding (encode_instructions)
TOKEN_MASK = "instruction.token_mask"  # (B, L) bool


@dataclasses.dataclass
class VLAConfig:
    """Everything that rebuilds the network; stored beside every checkpoint (as `policy_config`)."""

    image_size: int = 32
    """Input images are (image_size, image_size, 3) uint8."""
    state_dim: int = 5
    """Proprioception size (the simulator's STATE_DIM)."""
    action_dim: int = 4
    """Action size (the simulator's ACTION_DIM); actions live in [-1, 1]."""
    chunk: int = 8
    """Actions predicted per forward pass (K)."""
    execute: int = 4
    """Actions of each chunk executed in closed loop before predicting the next chunk."""
    vocab_size: int = 4096
    """Hashed word vocabulary (see tokenizer.py); larger means fewer collisions."""
    max_words: int = 16
    """Instruction length in words; longer instructions are truncated."""
    vision_channels: int = 64
    """Channels of the strided conv layers in the vision encoder."""
    vision_grid: int = 4
    """The encoder downsamples to a grid x grid map: grid**2 vision tokens."""
    vision_keypoints: int = 16
    """Extra vision tokens, each the (x, y) expectation of a spatial softmax over the first conv
    layer's map (0 disables). They hand the transformer object coordinates directly."""
    d_model: int = 128
    """Width of the language backbone (and of vision tokens)."""
    n_heads: int = 4
    """Attention heads in every transformer layer."""
    language_layers: int = 4
    """Transformer layers of the language backbone."""
    d_action: int = 128
    """Width of the action expert."""
    action_layers: int = 2
    """Layers of the action expert (each: self-attention, cross-attention to the backbone, MLP)."""
    mlp_ratio: int = 4
    """MLP hidden size = mlp_ratio * width."""
    vision_film: bool = False
    """Condition every conv layer on the instruction (FiLM, as in RT-1): the mean word embedding
    scales and shifts the channels, so the encoder can look for what the words name."""
    locate_weight: float = 0.0
    """Weight of an auxiliary loss, used only when a batch carries privileged TARGET positions
    (simulator pretraining): a head on the encoder's last map regresses where the instructed thing
    and its destination are. 0 builds no head. It gives the encoder a direct localisation signal,
    which behaviour cloning alone was found to deliver too slowly at this scale."""
    locate_heatmap: bool = False
    """Locate by a spatial softmax over an instruction-conditioned heat map on the 8 x 8 conv map
    (one map for the thing, one for its destination) instead of an MLP over the flattened last
    map: translation-equivariant, so where a thing is transfers across the table (the probe:
    docs/measurements.md, "The default base")."""
    language_backbone: str = "hashed"
    """Where the words' features come from. "hashed": embeddings of hashed words (tokenizer.py), learned
    from the pretraining instructions alone. "minilm": sentence-transformers' all-MiniLM-L6-v2
    (minilm.py, 22.7 M parameters, pretrained on a billion sentence pairs) encodes the instruction's
    word pieces, projected to d_model, so words and phrasings pretraining never used still land near
    the ones it did; its weights are `language.text.*`, merged by the language alpha. `max_words`
    then counts word pieces, [CLS] and [SEP] included."""
    locate_feeds_action: bool = False
    """Hand the located (thing, destination) positions to the action expert's state token, so
    moving to what the words name is a function of four numbers it is given rather than something
    it must read out of attention. The head then runs on every forward pass and, when finetuning
    has no TARGET positions, learns only through the action loss."""

    def __post_init__(self) -> None:
        ratio = self.image_size // max(self.vision_grid, 1)
        if self.vision_grid < 1 or ratio * self.vision_grid != self.image_size or ratio & (ratio - 1):
            raise invalid(
                f"vision_grid {self.vision_grid} must divide image_size {self.image_size} by a power of two; e.g. image_size 32 with vision_grid 4"
            )
        if not 1 <= self.execute <= self.chunk:
            raise invalid(f"execute {self.execute} must be between 1 and chunk {self.chunk}")
        for width, name in ((self.d_model, "d_model"), (self.d_action, "d_action")):
            if width % self.n_heads:
                raise invalid(f"{name} {width} must be divisible by n_heads {self.n_heads}")
        if self.language_backbone not in LANGUAGE_BACKBONES:
            raise invalid(f"language_backbone {self.language_backbone!r} is unknown; use one of {', '.join(LANGUAGE_BACKBONES)}")
        if self.vocab_size < 16:
            raise invalid(f"vocab_size {self.vocab_size} is too small; use at least 16 (4096 is the default)")
        if self.locate_weight < 0:
            raise invalid(f"locate_weight must be >= 0, got {self.locate_weight}")
        if (self.locate_heatmap or self.locate_feeds_action) and not self.locate_weight:
            raise invalid("locate_heatmap and locate_feeds_action need the locate head; set locate_weight > 0 (5.0 is the default base's)")
        if self.vision_keypoints < 0:
            raise invalid(f"vision_keypoints must be >= 0, got {self.vision_keypoints}")
        for name in ("state_dim", "action_dim", "chunk", "max_words", "vision_channels", "language_layers", "action_layers", "mlp_ratio"):
            if getattr(self, name) < 1:
                raise invalid(f"{name} must be at least 1, got {getattr(self, name)}")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "VLAConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise invalid(f"unknown builtin-vla config field(s) {unknown}; known fields: {sorted(known)}")
        return cls(**dict(d))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        if d["language_backbone"] == "hashed":  # the default is left out, so every config recorded before it stays the same
            del d["language_backbone"]
        return d


# ------------------------------------------------------------------------------------ building blocks


class Attention(nn.Module):
    """Multi-head attention; queries from `x`, keys/values from `ctx` (self-attention when ctx is x)."""

    def __init__(self, width: int, n_heads: int, ctx_width: int | None = None):
        super().__init__()
        self.n_heads = n_heads
        self.q = nn.Linear(width, width)
        self.kv = nn.Linear(ctx_width or width, 2 * width)
        self.out = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor | None = None) -> torch.Tensor:
        B, T, D = x.shape
        h = self.n_heads
        q = self.q(x).view(B, T, h, D // h).transpose(1, 2)  # (B, h, T, D/h)
        k, v = self.kv(ctx).view(B, ctx.shape[1], 2, h, D // h).permute(2, 0, 3, 1, 4)  # each (B, h, S, D/h)
        mask = None if ctx_mask is None else ctx_mask[:, None, None, :]  # (B, 1, 1, S): True = attend
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.out(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, width: int, ratio: int):
        super().__init__()
        self.up = nn.Linear(width, ratio * width)
        self.down = nn.Linear(ratio * width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(F.gelu(self.up(x)))


class Block(nn.Module):
    """Pre-norm transformer layer; with `ctx_width` it also cross-attends to a context."""

    def __init__(self, width: int, n_heads: int, mlp_ratio: int, ctx_width: int | None = None):
        super().__init__()
        self.norm1 = nn.LayerNorm(width)
        self.attn = Attention(width, n_heads)
        self.cross = ctx_width is not None
        if self.cross:
            self.norm_x = nn.LayerNorm(width)
            self.cross_attn = Attention(width, n_heads, ctx_width)
        self.norm2 = nn.LayerNorm(width)
        self.mlp = MLP(width, mlp_ratio)

    def forward(self, x, mask=None, ctx=None, ctx_mask=None):
        h = self.norm1(x)
        x = x + self.attn(h, h, mask)
        if self.cross:
            x = x + self.cross_attn(self.norm_x(x), ctx, ctx_mask)
        return x + self.mlp(self.norm2(x))


# ------------------------------------------------------------------------------------------ the parts


class VisionEncoder(nn.Module):
    """uint8 images (B, H, W, 3) -> tokens (B, G*G + P, D): a strided-conv grid plus P keypoints.

    The input gets two coordinate channels (CoordConv) and the first conv map also feeds a
    spatial softmax (as in deep spatial autoencoders / diffusion policy): each keypoint token is
    where one learned feature is on the image. Without these, a 32 px scene with small objects
    and broad background variation was learned as "ignore the image" (state and words only).
    """

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        n_down = int(math.log2(cfg.image_size // cfg.vision_grid))
        c_in = 5  # RGB + (x, y) coordinates
        convs: list[nn.Module] = []
        for _ in range(max(n_down, 1)):
            stride = 2 if n_down else 1
            # GroupNorm, not BatchNorm: no running statistics that a merge would have to average.
            convs.append(nn.Sequential(nn.Conv2d(c_in, cfg.vision_channels, 3, stride, 1), nn.GroupNorm(8, cfg.vision_channels), nn.GELU()))
            c_in = cfg.vision_channels
        self.convs = nn.ModuleList(convs)
        self.proj = nn.Conv2d(cfg.vision_channels, cfg.d_model, 1)
        self.n_keypoints = cfg.vision_keypoints
        if self.n_keypoints:
            self.keypoint_maps = nn.Conv2d(cfg.vision_channels, self.n_keypoints, 1)
            self.keypoint_in = nn.Linear(2, cfg.d_model)
        self.pos = nn.Parameter(torch.zeros(1, cfg.vision_grid**2 + self.n_keypoints, cfg.d_model))
        nn.init.normal_(self.pos, std=0.02)
        if cfg.vision_film:
            self.film = nn.ModuleList(nn.Linear(cfg.d_model, 2 * cfg.vision_channels) for _ in convs)
            for f in self.film:  # start as the identity: (1 + 0) * x + 0
                nn.init.zeros_(f.weight)
                nn.init.zeros_(f.bias)
        self.heat_level = max(len(convs) - 1 - int(math.log2(max(8 // cfg.vision_grid, 1))), 0)
        if cfg.locate_weight and cfg.locate_heatmap:
            self.locate = HeatmapLocator(cfg.vision_channels, cfg.d_model)
        elif cfg.locate_weight:
            self.locate = nn.Sequential(nn.Linear(cfg.vision_channels * cfg.vision_grid**2 + cfg.d_model, 256), nn.GELU(), nn.Linear(256, 4))

    @staticmethod
    def _coords(h: int, w: int, device) -> torch.Tensor:
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, h, device=device), torch.linspace(-1, 1, w, device=device), indexing="ij")
        return torch.stack([xs, ys])  # (2, h, w)

    def forward(self, images: torch.Tensor, words: torch.Tensor, locate: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Vision tokens, and with `locate` the located (thing x, y, destination x, y) (B, 4) when the
        encoder has a locate head. `words` (B, D) is the instruction's mean word embedding (FiLM's input)."""
        x = images.permute(0, 3, 1, 2).float() / 127.5 - 1.0  # (B, 3, H, W) in [-1, 1]
        B, _, H, W = x.shape
        x = torch.cat([x, self._coords(H, W, x.device).expand(B, -1, -1, -1)], dim=1)  # (B, 5, H, W)
        first = heat_map = None
        film = getattr(self, "film", None)
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if film is not None:
                scale, shift = film[i](words).chunk(2, dim=-1)  # each (B, C)
                x = x * (1 + scale[..., None, None]) + shift[..., None, None]
            first = x if first is None else first  # (B, C, H/2, W/2)
            heat_map = x if i == self.heat_level else heat_map
        located = None
        if locate and hasattr(self, "locate"):
            if isinstance(self.locate, HeatmapLocator):
                located = self.locate(heat_map, words)
            else:
                located = self.locate(torch.cat([x.flatten(1), words], dim=1))
        tokens = self.proj(x).flatten(2).transpose(1, 2)  # (B, G*G, D)
        if self.n_keypoints:
            logits = self.keypoint_maps(first)  # (B, P, h, w)
            h, w = logits.shape[-2:]
            attn = logits.flatten(2).softmax(-1)  # (B, P, h*w)
            grid = self._coords(h, w, x.device).flatten(1)  # (2, h*w)
            xy = attn @ grid.T  # (B, P, 2) expected position of each feature
            tokens = torch.cat([tokens, self.keypoint_in(xy)], dim=1)  # (B, G*G + P, D)
        return tokens + self.pos, located


class HeatmapLocator(nn.Module):
    """(B, C, h, w) conv map + (B, D) words -> (B, 4) table x, y of the thing and its destination.

    Two instruction-conditioned heat maps, each reduced to its expected image position (spatial
    softmax), then one affine map to table units that may also shift by the words (a push's
    destination is an empty spot beside the thing, not something to point at)."""

    def __init__(self, channels: int, d_words: int):
        super().__init__()
        self.refine = nn.Conv2d(channels, channels, 3, 1, 1)
        self.film = nn.Linear(d_words, 2 * channels)
        nn.init.zeros_(self.film.weight)
        nn.init.zeros_(self.film.bias)
        self.heat = nn.Conv2d(channels, 2, 1)
        self.to_table = nn.Linear(4 + d_words, 4)

    def forward(self, x: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
        y = F.gelu(self.refine(x))
        scale, shift = self.film(words).chunk(2, dim=-1)
        y = y * (1 + scale[..., None, None]) + shift[..., None, None]
        logits = self.heat(y)  # (B, 2, h, w)
        h, w = logits.shape[-2:]
        grid = VisionEncoder._coords(h, w, x.device).flatten(1)  # (2, h*w)
        xy = (logits.flatten(2).softmax(-1) @ grid.T).flatten(1)  # (B, 4) image x, y of each map
        return self.to_table(torch.cat([xy, words], dim=1))


class LanguageBackbone(nn.Module):
    """A transformer over [vision tokens; instruction tokens] -> context (B, G*G + L, D).

    The instruction tokens are learned hashed-word embeddings, or (language_backbone "minilm") the
    pretrained text encoder's outputs projected to the width. A frozen encoder's outputs are cached
    by token row, so pretraining encodes each distinct instruction once."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        if cfg.language_backbone == "minilm":
            from retain.policies import minilm

            self.text = minilm.MiniLM().load_pretrained()
            self.text_proj = nn.Linear(minilm.WIDTH, cfg.d_model)
            self.kind = nn.Parameter(torch.zeros(2, cfg.d_model))  # 0 = vision token, 1 = word
            nn.init.normal_(self.kind, std=0.02)
            self._cache: dict[bytes, torch.Tensor] = {}
            self._cache_stamp: tuple = ()
        else:
            self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
            self.pos = nn.Parameter(torch.zeros(1, cfg.max_words, cfg.d_model))
            self.kind = nn.Parameter(torch.zeros(2, cfg.d_model))  # 0 = vision token, 1 = word
            for p in (self.embed.weight, self.pos, self.kind):
                nn.init.normal_(p, std=0.02)
        self.blocks = nn.ModuleList(Block(cfg.d_model, cfg.n_heads, cfg.mlp_ratio) for _ in range(cfg.language_layers))
        self.norm = nn.LayerNorm(cfg.d_model)

    def encode_text(self, tokens: torch.Tensor, token_mask: torch.Tensor) -> torch.Tensor:
        """(B, L, D) the pretrained encoder's projected outputs, computed once per distinct token row
        (a batch of one skill's demos holds one instruction); while the encoder is frozen or no gradient
        is taken, rows seen before come from the cache, which any change of its weights empties."""
        params = list(self.text.parameters())
        uniq, inverse = torch.unique(tokens, dim=0, return_inverse=True)
        umask = uniq != 0  # [PAD] is id 0
        # _version is bumped by every in-place write (an optimizer step, a load, a merge); the
        # storage address catches a parameter replaced by a new tensor
        stamp = tuple((p.data_ptr(), p._version) for p in params)
        # a rollout (no grad) reads the cache too, so it encodes each instruction once, not per chunk
        trains_text = torch.is_grad_enabled() and any(p.requires_grad for p in params)
        if trains_text or stamp != self._cache_stamp:
            self._cache.clear()
            self._cache_stamp = stamp
        if trains_text:
            hidden = self.text(uniq, umask)
        else:
            keys = [row.tobytes() for row in uniq.cpu().numpy()]
            new = [i for i, k in enumerate(keys) if k not in self._cache]
            if new:
                with torch.no_grad():
                    fresh = self.text(uniq[new], umask[new])
                for j, i in enumerate(new):
                    self._cache[keys[i]] = fresh[j]
            hidden = torch.stack([self._cache[k] for k in keys])
        return self.text_proj(hidden)[inverse]

    def mean_word(self, tokens: torch.Tensor, token_mask: torch.Tensor, feats: torch.Tensor | None = None) -> torch.Tensor:
        """(B, D) the mean embedding of each instruction's words: the vision encoder's FiLM input."""
        m = token_mask[..., None].float()
        return ((self.embed(tokens) if feats is None else feats) * m).sum(1) / m.sum(1).clamp(min=1.0)

    def forward(self, vision: torch.Tensor, tokens: torch.Tensor, token_mask: torch.Tensor, feats: torch.Tensor | None = None):
        """`feats`: the minilm backbone's encode_text output (the hashed backbone embeds `tokens` itself)."""
        if feats is None:
            words = self.embed(tokens) + self.pos[:, : tokens.shape[1]] + self.kind[1]  # (B, L, D)
        else:
            words = feats + self.kind[1]
        x = torch.cat([vision + self.kind[0], words], dim=1)  # (B, G*G + L, D)
        mask = torch.cat([torch.ones(vision.shape[:2], dtype=torch.bool, device=x.device), token_mask], dim=1)
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x), mask


class ActionExpert(nn.Module):
    """State + K learned chunk queries attend to each other and to the backbone's context."""

    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.state_in = nn.Linear(cfg.state_dim, cfg.d_action)
        if cfg.locate_feeds_action:
            self.located_in = nn.Linear(4, cfg.d_action)
        self.queries = nn.Parameter(torch.zeros(1, cfg.chunk, cfg.d_action))
        nn.init.normal_(self.queries, std=0.02)
        self.blocks = nn.ModuleList(
            Block(cfg.d_action, cfg.n_heads, cfg.mlp_ratio, ctx_width=cfg.d_model) for _ in range(cfg.action_layers)
        )
        self.norm = nn.LayerNorm(cfg.d_action)
        self.head = nn.Linear(cfg.d_action, cfg.action_dim)

    def forward(self, state: torch.Tensor, ctx: torch.Tensor, ctx_mask: torch.Tensor,
                located: torch.Tensor | None = None) -> torch.Tensor:
        B = state.shape[0]
        s = self.state_in(state)
        if located is not None:
            s = s + self.located_in(located)
        x = torch.cat([s[:, None], self.queries.expand(B, -1, -1)], dim=1)  # (B, 1+K, Da)
        for block in self.blocks:
            x = block(x, None, ctx, ctx_mask)
        return self.head(self.norm(x[:, 1:]))  # (B, K, A)


class BuiltinVLA(nn.Module):
    def __init__(self, cfg: VLAConfig):
        super().__init__()
        self.cfg = cfg
        self.vision = VisionEncoder(cfg)
        self.language = LanguageBackbone(cfg)
        self.action = ActionExpert(cfg)

    def forward(self, images, state, tokens, token_mask, located: bool = False):
        """Predicted action chunk (B, K, A) for images (B, H, W, 3) uint8, state (B, S), tokens (B, L);
        with `located`, also the locate head's (B, 4) output (None without the head). One forward
        for both, so a DistributedDataParallel wrapper syncs the gradients of each."""
        feed = self.cfg.locate_feeds_action
        # the hashed backbone looks its embeddings up twice, as every base before minilm was trained
        feats = self.language.encode_text(tokens, token_mask) if self.cfg.language_backbone == "minilm" else None
        vision, where = self.vision(images, self.language.mean_word(tokens, token_mask, feats), locate=located or feed)
        ctx, mask = self.language(vision, tokens, token_mask, feats)
        actions = self.action(state, ctx, mask, where if feed else None)
        return (actions, where) if located else actions

    def tokenize(self, instructions: Sequence[str]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.cfg.language_backbone == "minilm":
            from retain.policies import minilm

            ids, mask = minilm.tokenize(instructions, self.cfg.max_words)
        else:
            ids, mask = tokenizer.tokenize(instructions, self.cfg.vocab_size, self.cfg.max_words)
        return torch.from_numpy(ids), torch.from_numpy(mask)


# ------------------------------------------------------------------------------------------ adapter


class BuiltinVLAAdapter:
    """The adapter (see adapter.py) for the built-in VLA."""

    name = POLICY_NAME
    partition_preset = "builtin"

    def config(self, config: Mapping[str, Any] | None = None) -> VLAConfig:
        return VLAConfig.from_dict(config or {})

    def build(self, config: Mapping[str, Any], seed: int = 0) -> BuiltinVLA:
        cfg = self.config(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            return BuiltinVLA(cfg)

    def load(self, checkpoint_dir: str | Path, config: Mapping[str, Any]) -> BuiltinVLA:
        model = self.build(config)
        load_state_dict(model, checkpoint_dir)
        return model.eval()

    def save(self, model: BuiltinVLA, dest: str | Path) -> Path:
        return save_state_dict(model, dest, {"policy": POLICY_NAME, "policy_config": json.dumps(model.cfg.to_dict(), sort_keys=True)})

    def execute_steps(self, model: BuiltinVLA) -> int:
        return model.cfg.execute

    def encode_instructions(self, model: BuiltinVLA, instructions: Sequence[str]) -> dict[str, torch.Tensor]:
        """Token ids and mask of each instruction, so the trainer tokenizes a task once, not every step."""
        tokens, mask = model.tokenize(instructions)
        return {TOKEN_IDS: tokens, TOKEN_MASK: mask}

    def loss(self, model: BuiltinVLA, batch: Mapping[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """L1 between the predicted and demonstrated chunks, ignoring steps past an episode's end;
        plus `locate_weight` x the locate head's L1 when the batch carries TARGET positions. The
        batch moves to the model's device (a no-op where the trainer built it there), and the parts
        come back as detached tensors: reading them is the caller's choice (a GPU sync)."""
        dev = next(model.parameters()).device
        batch = {k: v.to(dev) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
        if TOKEN_IDS in batch:
            tokens, mask = batch[TOKEN_IDS], batch[TOKEN_MASK]
        else:
            tokens, mask = (t.to(dev) for t in model.tokenize(batch[INSTRUCTION]))
        if TARGET in batch:
            pred, located = model(batch[IMAGE], batch[STATE], tokens, mask, located=True)  # (B, K, A), (B, 4)
        else:
            pred, located = model(batch[IMAGE], batch[STATE], tokens, mask), None
        keep = (~batch[ACTION_IS_PAD]).float()[..., None]  # (B, K, 1)
        err = (pred - batch[ACTION]).abs() * keep
        loss = err.sum() / (keep.sum() * pred.shape[-1]).clamp(min=1.0)
        parts = {"l1": loss.detach()}
        if located is not None:
            locate = (located - batch[TARGET]).abs().mean()
            parts["locate"] = locate.detach()
            loss = loss + model.cfg.locate_weight * locate
        return loss, parts

    @torch.no_grad()
    def act_chunk(self, model: BuiltinVLA, obs: Mapping[str, np.ndarray], instructions: Sequence[str]) -> np.ndarray:
        """The next `execute` actions (n, execute, A) in [-1, 1] for n observations, one forward pass."""
        was_training = model.training
        model.eval()
        dev = next(model.parameters()).device
        tokens, mask = (t.to(dev) for t in model.tokenize(instructions))
        pred = model(torch.from_numpy(np.ascontiguousarray(obs["image"])).to(dev),
                     torch.from_numpy(np.asarray(obs["state"], np.float32)).to(dev), tokens, mask)
        model.train(was_training)
        return pred[:, : model.cfg.execute].clamp(-1.0, 1.0).cpu().numpy()

    def act(self, model: BuiltinVLA, obs: Mapping[str, np.ndarray], instructions: Sequence[str]) -> np.ndarray:
        """The next action (n, A) for each of n observations."""
        return self.act_chunk(model, obs, instructions)[:, 0]
