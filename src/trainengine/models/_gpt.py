"""A small GPT: causal decoder-only transformer in the style of nanoGPT's ``model.py``.

Parameter names follow nanoGPT / GPT-2 (``transformer.wte``, ``transformer.h.0.attn.c_attn``,
...), so GPT-2 checkpoints map onto this module with only the usual Conv1D transposes.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

import torch
import torch.nn.functional as F
from torch import nn

from trainengine.errors import ConfigError, DataError
from trainengine.models._common import check_dropout, check_positive_int, count_parameters

__all__ = ["GPTConfig", "GPT", "check_sampling", "sample_next_token", "generate_text"]


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

    def forward_cached(self, x: torch.Tensor, kv: list[torch.Tensor]) -> torch.Tensor:
        """Attention of ``x`` ``(B, T, C)`` (the next ``T`` positions) over the cached keys/values and its own.

        ``kv`` is this layer's cache, ``[]`` or ``[k, v]`` of shape ``(B, nh, T_past, hs)``; it is
        replaced by the keys/values of all ``T_past + T`` positions. A separate method (not a
        ``forward`` argument) so tracing, scripting and ONNX export see the plain forward.
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        v = v.view(B, T, self.n_heads, C // self.n_heads).transpose(1, 2)
        if kv:
            k = torch.cat((kv[0], k), dim=2)  # (B, nh, T_past + T, hs)
            v = torch.cat((kv[1], v), dim=2)
        kv[:] = [k, v]
        past = k.size(2) - T
        mask = None
        if past and T > 1:
            # New position i (absolute past + i) sees every cached key and new keys up to itself.
            mask = torch.ones(T, past + T, dtype=torch.bool, device=x.device).tril(diagonal=past)  # (T, T_all)
        # past == 0: a plain causal prefill; T == 1: one new query that may see every key.
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=past == 0 and T > 1)  # (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
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

    def forward_cached(self, x: torch.Tensor, kv: list[torch.Tensor]) -> torch.Tensor:
        """:meth:`forward` for the next positions of a sequence whose earlier keys/values are in ``kv``."""
        x = x + self.attn.forward_cached(self.ln_1(x), kv)
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
        return self.lm_head(self.forward_hidden(input_ids))  # (B, T, V)

    def forward_hidden(self, input_ids: torch.Tensor) -> torch.Tensor:
        """The final hidden states ``[B, T, d_model]`` (after ``ln_f``): :meth:`forward` without ``lm_head``.

        ``forward(ids) == lm_head(forward_hidden(ids))``. The engine's fused loss takes these and
        ``lm_head.weight`` to compute the cross-entropy without the full ``[B, T, V]`` logits.

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
        return parts["ln_f"](x)  # (B, T, C)

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

    def _forward_cached(self, input_ids: torch.Tensor, caches: list[list[torch.Tensor]]) -> torch.Tensor:
        """Logits ``(B, T, V)`` of the next ``T`` positions, given one ``[k, v]`` cache per layer (updated).

        Positions continue after the cached ones, so the logits equal those of :meth:`forward` on
        the whole sequence (as long as it fits ``max_seq_len``; :meth:`generate` makes sure).
        """
        past = caches[0][0].size(2) if caches[0] else 0
        parts = self.transformer
        pos = torch.arange(past, past + input_ids.shape[1], device=input_ids.device)  # (T,)
        x = parts["drop"](parts["wte"](input_ids) + parts["wpe"](pos))  # (B, T, C)
        for block, kv in zip(cast(nn.ModuleList, parts["h"]), caches, strict=True):
            x = cast(Block, block).forward_cached(x, kv)
        return self.lm_head(parts["ln_f"](x))  # (B, T, V)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        max_new_tokens: int,
        temperature: float = 1.0,
        top_k: int | None = None,
        generator: torch.Generator | None = None,
        *,
        top_p: float | None = None,
        use_cache: bool = True,
    ) -> torch.Tensor:
        """Sample ``max_new_tokens`` tokens after the prompt ``input_ids`` ``[B, T]``.

        The context fed to the model is cropped to the last ``max_seq_len`` tokens. The model
        is put in eval mode while sampling (no dropout) and its previous mode restored.

        With ``use_cache`` (the default) each layer's keys and values are kept, so a new token
        costs one position's forward instead of the whole context's; the logits are those of the
        uncached path (same positions, same attention). Once the sequence fills ``max_seq_len``
        the window slides, every position shifts, and the cropped context is re-run for each new
        token, exactly as without a cache.

        Args:
            input_ids: Prompt token ids ``[B, T]`` with ``T >= 1``.
            max_new_tokens: Number of tokens to append.
            temperature: Divides the logits; ``< 1`` sharpens, ``0`` means greedy (argmax).
            top_k: Sample only among the ``top_k`` most likely tokens; ``1`` is greedy.
            generator: Random generator for reproducible sampling.
            top_p: Nucleus sampling: only the most likely tokens whose probabilities sum to at
                least ``top_p`` (in ``(0, 1]``); ``None`` or ``1`` keeps every token.
            use_cache: Keep keys/values between steps (faster; same tokens).

        Returns:
            ``[B, T + max_new_tokens]``: the prompt followed by the generated tokens.

        Example:
            >>> import torch
            >>> model = GPT(GPTConfig(vocab_size=50, max_seq_len=8, d_model=32, n_heads=2))
            >>> model.generate(torch.zeros(1, 3, dtype=torch.long), max_new_tokens=10).shape
            torch.Size([1, 13])
            >>> prompt = torch.tensor([[1, 2, 3]])
            >>> torch.equal(
            ...     model.generate(prompt, 4, temperature=0), model.generate(prompt, 4, temperature=0, use_cache=False)
            ... )
            True
        """
        if max_new_tokens < 0:
            raise ValueError(f"max_new_tokens must be >= 0, got {max_new_tokens}")
        check_sampling(temperature, top_k, top_p)
        if input_ids.dim() != 2 or input_ids.shape[1] < 1:
            raise DataError(
                f"generate expects prompt token ids of shape [B, T] with T >= 1, got shape {tuple(input_ids.shape)}; "
                f"add a batch dimension with input_ids.unsqueeze(0)"
            )
        window = self.config.max_seq_len
        was_training = self.training
        self.eval()
        try:
            idx = input_ids
            caches: list[list[torch.Tensor]] = []
            cached = 0  # positions held by the caches
            for _ in range(max_new_tokens):
                if not use_cache:
                    logits = self(idx[:, -window:])[:, -1, :]  # (B, V): only the last position predicts
                elif not caches or cached >= window:
                    # First step, or the window is full: positions shift, so the cache starts again.
                    caches = [[] for _ in range(self.config.n_layers)]
                    context = idx[:, -window:]  # (B, <=max_seq_len)
                    logits = self._forward_cached(context, caches)[:, -1, :]
                    cached = context.shape[1]
                else:
                    logits = self._forward_cached(idx[:, -1:], caches)[:, -1, :]  # (B, V)
                    cached += 1
                idx_next = sample_next_token(logits, temperature, top_k, top_p, generator)  # (B, 1)
                idx = torch.cat((idx, idx_next), dim=1)
        finally:
            self.train(was_training)
        return idx

    def extra_repr(self) -> str:
        fields = dataclasses.fields(self.config)
        return ", ".join(f"{f.name}={getattr(self.config, f.name)}" for f in fields)


def check_sampling(temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None) -> None:
    """Refuse sampling options out of range, all problems at once.

    Raises:
        ValueError: ``temperature`` is negative or not finite, ``top_k < 1``, or ``top_p`` is not in ``(0, 1]``.

    Example:
        >>> check_sampling(0.8, top_k=40, top_p=0.95)
        >>> check_sampling(top_p=0)
        Traceback (most recent call last):
        ...
        ValueError: top_p must be in (0, 1] or None (1 keeps every token), got 0
    """
    problems = []
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature < math.inf:
        problems.append(f"temperature must be a finite number >= 0 (0 means greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        problems.append(f"top_k must be an integer >= 1 or None, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1):
        problems.append(f"top_p must be in (0, 1] or None (1 keeps every token), got {top_p!r}")
    if problems:
        raise ValueError("; ".join(problems))


def sample_next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """One token id per row from next-token ``logits`` ``(B, V)``: greedy, or sampled with temperature / top-k / top-p.

    Filters apply in this order: temperature, top-k, top-p (the smallest set of most likely tokens
    whose probabilities sum to at least ``top_p``; the most likely token always stays).

    Args:
        logits: ``(B, V)`` scores of the next token.
        temperature: ``0`` = argmax (no randomness, ``generator`` unused); else the logits are divided by it.
        top_k: Keep only the ``top_k`` highest scores (``None``: all).
        top_p: Nucleus threshold in ``(0, 1]`` (``None`` or ``1``: all).
        generator: Random generator (on the logits' device) for reproducible draws.

    Returns:
        ``(B, 1)`` int64 token ids.

    Example:
        >>> import torch
        >>> sample_next_token(torch.tensor([[0.1, 3.0, 0.2]]), temperature=0)
        tensor([[1]])
        >>> sample_next_token(torch.tensor([[0.0, 5.0, 4.9]]), top_k=1)
        tensor([[1]])
    """
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)  # (B, 1)
    scores = logits.float() / temperature  # (B, V)
    vocab = scores.size(-1)
    if top_k is not None and top_k < vocab:
        kth = torch.topk(scores, top_k).values[:, [-1]]  # (B, 1): the k-th highest score
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = torch.sort(scores, dim=-1, descending=True)  # (B, V)
        probs = F.softmax(ordered, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p (the first is never dropped).
        drop = (probs.cumsum(dim=-1) - probs) >= top_p
        scores = scores.scatter(-1, order, ordered.masked_fill(drop, float("-inf")))
    probs = F.softmax(scores, dim=-1)
    return torch.multinomial(probs, 1, generator=generator)  # (B, 1)


class _TextTokenizer(Protocol):
    """What :func:`generate_text` needs from a tokenizer (``trainengine.data.ByteTokenizer`` / ``HFTokenizer``)."""

    def encode_batch(self, texts: list[str]) -> list[list[int]]: ...

    def decode(self, ids: Sequence[int]) -> str: ...


def generate_text(
    model: nn.Module,
    tokenizer: _TextTokenizer,
    prompt: str,
    *,
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    seed: int | None = None,
) -> str:
    """The completion of ``prompt`` (the new text only) by a language model with a ``generate`` method.

    The prompt is encoded with ``tokenizer`` (no special tokens), ``model.generate`` appends
    ``max_new_tokens`` tokens on the model's device, and the new tokens are decoded. Greedy when
    ``temperature`` is 0; with a ``seed`` the same prompt gives the same text on the same device.

    Args:
        model: A :class:`GPT` (or any module with the same ``generate`` signature).
        tokenizer: Text <-> ids: ``encode_batch([text])`` and ``decode(ids)``.
        prompt: The text to continue.
        max_new_tokens: Tokens to generate.
        temperature, top_k, top_p: As in :func:`sample_next_token`.
        seed: Seed of the sampling generator; ``None`` = torch's global generator.

    Returns:
        The generated text (without the prompt).

    Raises:
        DataError: The prompt has no tokens or a token id the model's vocabulary lacks.
        TypeError: The model has no ``generate`` method.

    Example:
        >>> from trainengine.data import ByteTokenizer
        >>> model = GPT(GPTConfig(vocab_size=256, max_seq_len=16, d_model=32, n_heads=2))
        >>> text = generate_text(model, ByteTokenizer(), "def ", max_new_tokens=4, temperature=0)
        >>> text == generate_text(model, ByteTokenizer(), "def ", max_new_tokens=4, temperature=0)
        True
    """
    generate = getattr(model, "generate", None)
    if not callable(generate):
        raise TypeError(
            f"{type(model).__name__} has no generate method; text generation needs a language model such as GPT"
        )
    ids = tokenizer.encode_batch([prompt])[0]
    if not ids:
        raise DataError(f"the prompt {prompt!r} has no tokens; give at least one character")
    vocab = getattr(getattr(model, "config", None), "vocab_size", None)
    if vocab is not None and max(ids) >= vocab:
        raise DataError(
            f"the prompt {prompt!r} encodes to token id {max(ids)}, outside the model's vocabulary of {vocab}: "
            "the tokenizer is not the one the model was trained with"
        )
    param = next(iter(model.parameters()), None)
    device = param.device if param is not None else torch.device("cpu")
    generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
    prompt_ids = torch.tensor([ids], dtype=torch.long, device=device)  # (1, T)
    out = generate(
        prompt_ids, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p, generator=generator
    )  # (1, T + max_new_tokens)
    new_ids = out[0, len(ids) :].tolist()
    # Decoded with the prompt, then the prompt's text cut off: a word-level or sentencepiece
    # tokenizer puts the space between the prompt and the first new word only in context.
    head, whole = tokenizer.decode(ids), tokenizer.decode(ids + new_ids)
    return whole[len(head) :] if whole.startswith(head) else tokenizer.decode(new_ids)
