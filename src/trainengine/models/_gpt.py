"""A small GPT: causal decoder-only transformer in the style of nanoGPT's ``model.py``.

Parameter names follow nanoGPT / GPT-2 (``transformer.wte``, ``transformer.h.0.attn.c_attn``,
...), so GPT-2 checkpoints map onto this module with only the usual Conv1D transposes.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, cast

import torch
import torch.nn.functional as F
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models._common import check_dropout, check_positive_int, count_parameters

__all__ = ["GPTConfig", "GPT"]


@dataclass
class GPTConfig:
    """Shape of a :class:`GPT`. Validated on construction; every problem is reported at once.

    Example:
        >>> cfg = GPTConfig(vocab_size=100, d_model=64, n_heads=4)
        >>> cfg.ff_dim
        256
    """

    vocab_size: int = 256  # tokens in the vocabulary (256 = raw bytes); a multiple of 64 is faster
    max_seq_len: int = 128  # longest sequence the model accepts (rows of the position embedding)
    d_model: int = 128  # width of the residual stream (embedding size)
    n_heads: int = 4  # attention heads; must divide d_model (head size = d_model // n_heads)
    n_layers: int = 2  # transformer blocks
    d_ff: int | None = None  # hidden width of each block's MLP; None means 4 * d_model (GPT-2)
    dropout: float = 0.0  # on embeddings, attention probs, residual branches; 0 for pretraining
    bias: bool = False  # biases in Linear and LayerNorm; False is slightly faster and as good
    tie_weights: bool = True  # lm_head reuses the token embedding (saves vocab_size * d_model)

    def __post_init__(self) -> None:
        problems: list[str] = []
        for name in ("vocab_size", "max_seq_len", "d_model", "n_heads", "n_layers"):
            check_positive_int(problems, name, getattr(self, name))
        if self.d_ff is not None:
            check_positive_int(problems, "d_ff", self.d_ff)
        check_dropout(problems, "dropout", self.dropout)
        shape_ok = not any(p.startswith(("d_model:", "n_heads:")) for p in problems)
        if shape_ok and self.d_model % self.n_heads != 0:
            nearest = self.n_heads * max(1, round(self.d_model / self.n_heads))
            problems.append(
                f"d_model: {self.d_model} is not divisible by n_heads={self.n_heads}; "
                f"pick a multiple of n_heads (e.g. d_model={nearest})"
            )
        if problems:
            raise ConfigError(problems, prefix="invalid GPTConfig")

    @property
    def ff_dim(self) -> int:
        """Resolved MLP hidden width: ``d_ff`` or ``4 * d_model`` when ``d_ff`` is None."""
        # Resolved lazily (not written back in __post_init__) so dataclasses.replace(cfg,
        # d_model=...) still derives the default from the new width.
        return self.d_ff if self.d_ff is not None else 4 * self.d_model

    @classmethod
    def gpt2_small(cls, vocab_size: int = 50304, max_seq_len: int = 1024, **overrides: Any) -> GPTConfig:
        """GPT-2 small (124M): 12 layers, 12 heads, width 768, biases, tied head.

        ``vocab_size`` defaults to 50304 (50257 padded to a multiple of 64, faster matmuls).
        With ``vocab_size=50257`` the parameter count is GPT-2's 124,439,808.

        Args:
            vocab_size: Vocabulary size.
            max_seq_len: Context length.
            **overrides: Any other :class:`GPTConfig` field, e.g. ``bias=False``, ``dropout=0.1``.

        Example:
            >>> GPTConfig.gpt2_small().n_layers
            12
        """
        fields: dict[str, Any] = {
            "vocab_size": vocab_size,
            "max_seq_len": max_seq_len,
            "d_model": 768,
            "n_heads": 12,
            "n_layers": 12,
            "d_ff": None,
            "dropout": 0.0,
            "bias": True,
            "tie_weights": True,
        }
        fields.update(overrides)
        return cls(**fields)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention where position t attends only to positions <= t."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.n_heads = config.n_heads
        self.dropout = config.dropout
        # One fused projection for q, k and v: a single large matmul instead of three.
        self.c_attn = nn.Linear(config.d_model, 3 * config.d_model, bias=config.bias)
        self.c_proj = nn.Linear(config.d_model, config.d_model, bias=config.bias)
        self.resid_dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        # (B, T, C) -> (B, nh, T, hs): heads become a batch dimension for the attention kernel
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        # Fused kernel (flash / memory-efficient where available); the causal mask is
        # built inside it, so no (T, T) buffer lives in the state_dict.
        y = F.scaled_dot_product_attention(
            q, k, v, is_causal=True, dropout_p=self.dropout if self.training else 0.0
        )  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # re-assemble heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> GELU -> Linear."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.c_fc = nn.Linear(config.d_model, config.ff_dim, bias=config.bias)
        self.gelu = nn.GELU()
        self.c_proj = nn.Linear(config.ff_dim, config.d_model, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.gelu(self.c_fc(x))))  # (B, T, C)


class Block(nn.Module):
    """Pre-LN transformer block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = nn.LayerNorm(config.d_model, bias=config.bias)
        self.mlp = FeedForward(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Pre-LN keeps the residual stream un-normalised, which trains stably without warmup tricks.
        x = x + self.attn(self.ln_1(x))
        x = x + self.mlp(self.ln_2(x))
        return x  # (B, T, C)


class GPT(nn.Module):
    """Decoder-only transformer language model returning next-token logits.

    Token + learned position embeddings, ``n_layers`` pre-LN blocks, a final LayerNorm and a
    linear head (sharing the token embedding's weight when ``config.tie_weights``). Weights
    use GPT-2's init: normal(0, 0.02), with each residual output projection scaled by
    ``1 / sqrt(2 * n_layers)`` so the residual stream's variance does not grow with depth.

    Args:
        config: Model shape; see :class:`GPTConfig`.

    Example:
        >>> import torch
        >>> model = GPT(GPTConfig(vocab_size=50, max_seq_len=16, d_model=32, n_heads=2))
        >>> model(torch.randint(0, 50, (2, 10))).shape
        torch.Size([2, 10, 50])
    """

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTConfig):
            raise ConfigError(
                f"GPT needs a GPTConfig, got {type(config).__name__}; "
                f"use GPT(GPTConfig(...)) or build_model('gpt', **fields)",
                prefix="invalid GPT arguments",
            )
        self.config = config
        wte = nn.Embedding(config.vocab_size, config.d_model)
        self.transformer = nn.ModuleDict(
            {
                "wte": wte,
                "wpe": nn.Embedding(config.max_seq_len, config.d_model),
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList([Block(config) for _ in range(config.n_layers)]),
                "ln_f": nn.LayerNorm(config.d_model, bias=config.bias),
            }
        )
        self.lm_head = nn.Linear(config.d_model, config.vocab_size, bias=False)
        if config.tie_weights:
            # One Parameter under two names: parameters() yields it once, the state_dict has
            # both keys pointing at the same storage.
            wte.weight = self.lm_head.weight

        self.apply(self._init_weights)
        # GPT-2: scale the init of the projections that write into the residual stream
        # (two per block) by 1/sqrt(2 * n_layers).
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Return logits ``[B, T, vocab_size]`` for token ids ``[B, T]``.

        Raises:
            DataError (a ValueError): ``input_ids`` is not 2-D or ``T > max_seq_len``.
        """
        # Shape checks only: they are static under torch.compile (no sync, no graph break).
        if input_ids.dim() != 2:
            raise DataError(
                f"GPT expects token ids of shape [B, T], got shape {tuple(input_ids.shape)}; "
                f"add a batch dimension with input_ids.unsqueeze(0)"
            )
        T = input_ids.shape[1]
        if self.config.max_seq_len < T:
            raise DataError(
                f"sequence length {T} exceeds the model's max_seq_len {self.config.max_seq_len}; "
                f"truncate or chunk the input to at most {self.config.max_seq_len} tokens, "
                f"or build the model with max_seq_len >= {T}"
            )
        # Indexing (not attribute access) so the parts type as Modules rather than Tensor | Module.
        parts = self.transformer
        pos = torch.arange(T, device=input_ids.device)  # (T,)
        tok_emb = parts["wte"](input_ids)  # (B, T, C)
        pos_emb = parts["wpe"](pos)  # (T, C), broadcast over the batch
        x = parts["drop"](tok_emb + pos_emb)
        for block in cast(nn.ModuleList, parts["h"]):
            x = block(x)
        x = parts["ln_f"](x)
        return self.lm_head(x)  # (B, T, V)

    def num_parameters(self, exclude_embeddings: bool = False) -> int:
        """Count parameters, a tied embedding/head weight once.

        Args:
            exclude_embeddings: Leave out the lookup tables that do no matmul work: the
                position embedding always, and the token embedding when it is *not* tied
                (when tied it is also the head's weight, which is a matmul, so it stays).
                This is the N of the ``6 * N`` FLOPs estimate.

        Returns:
            The number of scalar parameters.

        Example:
            >>> GPT(GPTConfig()).num_parameters() > GPT(GPTConfig()).num_parameters(True)
            True
        """
        n = count_parameters(self)
        if exclude_embeddings:
            n -= cast(nn.Embedding, self.transformer["wpe"]).weight.numel()
            if not self.config.tie_weights:
                n -= cast(nn.Embedding, self.transformer["wte"]).weight.numel()
        return n

    def num_flops_per_token(self, seq_len: int | None = None, include_attention: bool = True) -> int:
        """Training FLOPs (forward + backward) per token, for MFU.

        Formula (Kaplan et al. 2020; PaLM appendix B)::

            flops_per_token = 6 * N + 12 * n_layers * d_model * seq_len

        where ``N = num_parameters(exclude_embeddings=True)`` (all weights that take part in a
        matmul, the output head included; the position table and an untied token table are
        lookups). ``6 = 2`` (multiply-add) ``* 3`` (forward, plus backward at twice the cost).
        The second term is the attention score and value matmuls (``QK^T`` and ``AV``,
        ``2 * 2 * d_model * seq_len`` per layer forward, times 3), counted without the causal
        halving, as PaLM does. MFU = ``flops_per_token * tokens_per_second / peak_flops``.

        Args:
            seq_len: Sequence length used in training; defaults to ``config.max_seq_len``.
            include_attention: Add the attention term; ``False`` gives the plain ``6 * N``.

        Returns:
            FLOPs per token as an int.

        Example:
            >>> m = GPT(GPTConfig(n_layers=2, d_model=128))
            >>> m.num_flops_per_token(include_attention=False) == 6 * m.num_parameters(True)
            True
        """
        if seq_len is None:
            seq_len = self.config.max_seq_len
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or seq_len < 1:
            raise ValueError(f"seq_len must be a positive integer, got {seq_len!r}")
        flops = 6 * self.num_parameters(exclude_embeddings=True)
        if include_attention:
            flops += 12 * self.config.n_layers * self.config.d_model * seq_len
        return flops

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt ``input_ids`` ``[B, T]``.

        The context fed to the model is cropped to the last ``max_seq_len`` tokens. The model
        is put in eval mode while sampling (no dropout) and its previous mode restored.
        No KV cache: each new token re-runs the cropped context (fine for small models).

        Args:
            input_ids: Prompt token ids ``[B, T]`` with ``T >= 1``.
            max_new_tokens: Number of tokens to append.
            temperature: Divides the logits; ``< 1`` sharpens, ``0`` means greedy (argmax).
            top_k: Sample only among the ``top_k`` most likely tokens; ``1`` is greedy.
            generator: Random generator for reproducible sampling.

        Returns:
            ``[B, T + max_new_tokens]``: the prompt followed by the generated tokens.

        Example:
            >>> import torch
            >>> model = GPT(GPTConfig(vocab_size=50, max_seq_len=8, d_model=32, n_heads=2))
            >>> model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=10).shape
            torch.Size([1, 13])
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        if temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 means greedy), got {temperature}")
        if top_k is not None and top_k < 1:
            raise ValueError(f"top_k must be >= 1 or None, got {top_k}")
        was_training = self.training
        self.eval()
        try:
            idx = input_ids
            for _ in range(max_new_tokens):
                idx_cond = idx[:, -self.config.max_seq_len :]  # (B, <=max_seq_len)
                logits = self(idx_cond)[:, -1, :]  # (B, V): only the last position predicts
                if temperature == 0:
                    idx_next = logits.argmax(dim=-1, keepdim=True)  # (B, 1)
                else:
                    logits = logits / temperature
                    if top_k is not None:
                        kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                        logits = logits.masked_fill(logits < kth, float("-inf"))
                    probs = F.softmax(logits.float(), dim=-1)
                    idx_next = torch.multinomial(probs, 1, generator=generator)  # (B, 1)
                idx = torch.cat((idx, idx_next), dim=1)
        finally:
            self.train(was_training)
        return idx

    def extra_repr(self) -> str:
        fields = dataclasses.fields(self.config)
        return ", ".join(f"{f.name}={getattr(self.config, f.name)}" for f in fields)
