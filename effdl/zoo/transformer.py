"""Transformer reference architectures: BERT-style encoder classifier, GPT-style causal LM, encoder-decoder
seq2seq, and ViT.

Attention is written out with matmul and softmax (not ``nn.MultiheadAttention``): every projection is
a plain ``nn.Linear`` named ``q_proj`` / ``k_proj`` / ``v_proj`` / ``out_proj`` that pruning and
quantization can address by name, and both ONNX exporters produce the same simple graph with a dynamic
batch dimension. Sequence lengths are those of the task (the positional tables bound them at ``max_len``).
"""

from __future__ import annotations

import torch
from torch import nn

from effdl.tasks.text import CHAR_VOCAB
from effdl.zoo.registry import TrainRecipe, register_model

MASKED = -1e4  # added to masked attention scores; exp() of it underflows to exactly 0 in fp32 and fp16


class Attention(nn.Module):
    """Multi-head scaled dot-product attention; self-attention, or cross-attention when given a context."""

    def __init__(self, dim: int, heads: int, causal: bool = False, max_len: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"model dimension {dim} is not divisible by {heads} heads")
        self.heads, self.head_dim, self.causal = heads, dim // heads, causal
        self.scale = self.head_dim**-0.5
        self.q_proj = nn.Linear(dim, dim)
        self.k_proj = nn.Linear(dim, dim)
        self.v_proj = nn.Linear(dim, dim)
        self.out_proj = nn.Linear(dim, dim)
        self.dropout = nn.Dropout(dropout)
        if causal:
            self.register_buffer("mask", torch.tril(torch.ones(max_len, max_len, dtype=torch.bool)), persistent=False)

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        return x.unflatten(-1, (self.heads, self.head_dim)).transpose(1, 2)  # (B, heads, T, head_dim)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        kv = x if context is None else context
        q, k, v = self._split(self.q_proj(x)), self._split(self.k_proj(kv)), self._split(self.v_proj(kv))
        scores = (q @ k.transpose(-2, -1)) * self.scale
        if self.causal:
            t = x.shape[1]
            scores = scores.masked_fill(~self.mask[:t, :t], MASKED)
        attn = self.dropout(scores.softmax(-1))
        return self.out_proj((attn @ v).transpose(1, 2).flatten(2))


class MLP(nn.Module):
    """Position-wise feed-forward network: ``fc2(gelu(fc1(x)))``."""

    def __init__(self, dim: int, hidden: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.dropout(self.fc2(self.act(self.fc1(x))))


class Block(nn.Module):
    """Pre-norm transformer block: self-attention, optional cross-attention, feed-forward."""

    def __init__(
        self,
        dim: int,
        heads: int,
        mlp_ratio: float = 4.0,
        causal: bool = False,
        cross: bool = False,
        max_len: int = 256,
        dropout: float = 0.0,
        mlp: nn.Module | None = None,
    ) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, causal, max_len, dropout)
        self.ln_cross = nn.LayerNorm(dim) if cross else None
        self.cross_attn = Attention(dim, heads, False, max_len, dropout) if cross else None
        self.ln2 = nn.LayerNorm(dim)
        self.mlp = mlp if mlp is not None else MLP(dim, int(dim * mlp_ratio), dropout)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:  # noqa: D102
        x = x + self.dropout(self.attn(self.ln1(x)))
        if self.cross_attn is not None and self.ln_cross is not None:
            x = x + self.dropout(self.cross_attn(self.ln_cross(x), context))
        return x + self.mlp(self.ln2(x))


class EncoderClassifier(nn.Module):
    """BERT-style encoder classifier: token + learned position embeddings, a [CLS] token, pre-norm blocks."""

    def __init__(
        self,
        vocab_size: int = 16,
        dim: int = 64,
        depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        num_classes: int = 4,
        max_len: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len + 1, dim) * 0.02)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, max_len=max_len + 1, dropout=dropout) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def encode(self, tokens: torch.Tensor) -> torch.Tensor:
        """Hidden states ``(B, 1 + T, dim)``; position 0 is the [CLS] token."""
        x = torch.cat([self.cls.expand(tokens.shape[0], -1, -1), self.embed(tokens)], 1)
        x = x + self.pos[: x.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.ln_f(x)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # noqa: D102
        return self.head(self.encode(tokens)[:, 0])


@register_model(
    "bert_classifier",
    family="transformer",
    task="seq_majority",
    defaults={"vocab_size": 16, "dim": 64, "depth": 2, "heads": 4, "mlp_ratio": 4.0, "num_classes": 4, "max_len": 128},
    tiny={"dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2.0},
    train=TrainRecipe(epochs=6, lr=2e-3, batch_size=64, grad_clip=1.0, weight_decay=0.01),
)
def bert_classifier(
    vocab_size: int = 16,
    dim: int = 64,
    depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    num_classes: int = 4,
    max_len: int = 128,
) -> nn.Module:
    """BERT-style encoder classifier ([CLS] token, learned positions, pre-norm blocks)."""
    return EncoderClassifier(vocab_size, dim, depth, heads, mlp_ratio, num_classes, max_len)


class GPT(nn.Module):
    """GPT-style decoder-only causal language model (untied input and output embeddings)."""

    def __init__(
        self,
        vocab_size: int = len(CHAR_VOCAB),
        dim: int = 128,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        max_len: int = 128,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, dim)
        self.pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.blocks = nn.ModuleList(
            Block(dim, heads, mlp_ratio, causal=True, max_len=max_len, dropout=dropout) for _ in range(depth)
        )
        self.ln_f = nn.LayerNorm(dim)
        # Untied on purpose: safetensors refuses tensors that share memory, and effdl saves safetensors.
        self.head = nn.Linear(dim, vocab_size)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x))


@register_model(
    "gpt",
    family="transformer",
    task="stdlib_text",
    defaults={"vocab_size": len(CHAR_VOCAB), "dim": 128, "depth": 4, "heads": 4, "mlp_ratio": 4.0, "max_len": 128},
    tiny={"dim": 16, "depth": 1, "heads": 2, "mlp_ratio": 2.0},
    train=TrainRecipe(epochs=6, lr=3e-3, batch_size=32, grad_clip=1.0, weight_decay=0.01),
)
def gpt(
    vocab_size: int = len(CHAR_VOCAB),
    dim: int = 128,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    max_len: int = 128,
) -> nn.Module:
    """GPT-style causal character language model (pre-norm decoder blocks, learned positions)."""
    return GPT(vocab_size, dim, depth, heads, mlp_ratio, max_len)


class Seq2SeqTransformer(nn.Module):
    """Encoder-decoder transformer (Vaswani et al. 2017, pre-norm): logits for the teacher-forced target."""

    def __init__(
        self,
        vocab_size: int = 16,
        dim: int = 64,
        enc_depth: int = 2,
        dec_depth: int = 2,
        heads: int = 4,
        mlp_ratio: float = 4.0,
        max_len: int = 64,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.src_embed = nn.Embedding(vocab_size, dim)
        self.tgt_embed = nn.Embedding(vocab_size, dim)
        self.src_pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.tgt_pos = nn.Parameter(torch.randn(max_len, dim) * 0.02)
        self.encoder = nn.ModuleList(
            Block(dim, heads, mlp_ratio, max_len=max_len, dropout=dropout) for _ in range(enc_depth)
        )
        self.decoder = nn.ModuleList(
            Block(dim, heads, mlp_ratio, causal=True, cross=True, max_len=max_len, dropout=dropout)
            for _ in range(dec_depth)
        )
        self.ln_enc = nn.LayerNorm(dim)
        self.ln_dec = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, vocab_size)

    def encode(self, src: torch.Tensor) -> torch.Tensor:
        """Encoder memory ``(B, S, dim)``."""
        x = self.src_embed(src) + self.src_pos[: src.shape[1]]
        for block in self.encoder:
            x = block(x)
        return self.ln_enc(x)

    def forward(self, src: torch.Tensor, tgt_in: torch.Tensor) -> torch.Tensor:  # noqa: D102
        memory = self.encode(src)
        y = self.tgt_embed(tgt_in) + self.tgt_pos[: tgt_in.shape[1]]
        for block in self.decoder:
            y = block(y, memory)
        return self.head(self.ln_dec(y))


@register_model(
    "seq2seq_transformer",
    family="transformer",
    task="seq_reverse",
    defaults={"vocab_size": 16, "dim": 64, "enc_depth": 2, "dec_depth": 2, "heads": 4, "mlp_ratio": 4.0, "max_len": 64},
    tiny={"dim": 16, "enc_depth": 1, "dec_depth": 1, "heads": 2, "mlp_ratio": 2.0},
    train=TrainRecipe(epochs=5, lr=2e-3, batch_size=64, grad_clip=1.0, weight_decay=0.01),
)
def seq2seq_transformer(
    vocab_size: int = 16,
    dim: int = 64,
    enc_depth: int = 2,
    dec_depth: int = 2,
    heads: int = 4,
    mlp_ratio: float = 4.0,
    max_len: int = 64,
) -> nn.Module:
    """Encoder-decoder transformer for token sequence-to-sequence (teacher-forced decoder input)."""
    return Seq2SeqTransformer(vocab_size, dim, enc_depth, dec_depth, heads, mlp_ratio, max_len)


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021): patch embedding, [CLS] token, pre-norm encoder."""

    def __init__(
        self,
        image_size: int = 32,
        patch: int = 4,
        in_channels: int = 3,
        dim: int = 64,
        depth: int = 4,
        heads: int = 4,
        mlp_ratio: float = 2.0,
        num_classes: int = 6,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if image_size % patch:
            raise ValueError(f"image size {image_size} is not a multiple of the patch size {patch}")
        n = (image_size // patch) ** 2
        self.patch_embed = nn.Conv2d(in_channels, dim, patch, patch)
        self.cls = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos = nn.Parameter(torch.randn(n + 1, dim) * 0.02)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio, max_len=n + 1, dropout=dropout) for _ in range(depth))
        self.ln_f = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, image: torch.Tensor) -> torch.Tensor:  # noqa: D102
        x = self.patch_embed(image).flatten(2).transpose(1, 2)
        x = torch.cat([self.cls.expand(x.shape[0], -1, -1), x], 1) + self.pos
        for block in self.blocks:
            x = block(x)
        return self.head(self.ln_f(x)[:, 0])


@register_model(
    "vit",
    family="transformer",
    task="shapes",
    defaults={
        "image_size": 32,
        "patch": 8,
        "in_channels": 3,
        "dim": 64,
        "depth": 4,
        "heads": 4,
        "mlp_ratio": 2.0,
        "num_classes": 6,
    },  # fmt: skip
    tiny={"dim": 16, "depth": 1, "heads": 2, "patch": 8},
    train=TrainRecipe(epochs=12, lr=2e-3, batch_size=64, grad_clip=1.0, weight_decay=0.01),
    # Without convolutions' locality and translation bias a ViT needs more images than the CNNs.
    task_options={"n_train": 12000},
)
def vit(
    image_size: int = 32,
    patch: int = 8,
    in_channels: int = 3,
    dim: int = 64,
    depth: int = 4,
    heads: int = 4,
    mlp_ratio: float = 2.0,
    num_classes: int = 6,
) -> nn.Module:
    """Vision Transformer with 8x8 patches for 32x32 images (16 patches + [CLS])."""
    return ViT(image_size, patch, in_channels, dim, depth, heads, mlp_ratio, num_classes)
