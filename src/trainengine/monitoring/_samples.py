"""Sample generations at evaluation: a language model completes fixed prompts, logged as ``samples`` records.

Reading a few completions beside the validation loss shows what the loss does not (repetition,
broken syntax, a tokenizer mix-up). Greedy decoding keeps the samples comparable between
evaluations and leaves the training RNG untouched (sampling would draw from torch's global
generator and change the run's data order and dropout masks).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from trainengine.engine import Callback

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig

__all__ = ["SamplePrompts", "build_sample_prompts"]

logger = logging.getLogger("trainengine")


class SamplePrompts(Callback):
    """At each evaluation, greedily complete each prompt and log ``{"type": "samples", ...}``.

    The record goes through the trainer's ``on_log`` event, so it reaches ``logs.jsonl`` (the run
    directory) and every other callback; trackers take numbers only and skip it. Nothing runs on
    training steps: the only event is ``on_eval_end``.

    Args:
        prompts: Texts to complete (non-empty).
        max_new_tokens: Tokens generated per prompt.
        tokenizer: Text <-> ids; ``None`` = the training data set's tokenizer, else byte-level.

    Example:
        >>> cb = SamplePrompts(["def ", "import "], max_new_tokens=16)
        >>> cb.prompts, cb.max_new_tokens
        (['def ', 'import '], 16)

    The record, one per evaluation::

        {
            "type": "samples",
            "step": 200,
            "epoch": 0,
            "samples": [{"prompt": "def ", "completion": "__init__(self):"}, ...],
        }
    """

    rank_zero_only = True  # one copy of the samples, written by the process that owns the run directory

    def __init__(self, prompts: Sequence[str], max_new_tokens: int = 32, tokenizer: Any = None) -> None:
        if isinstance(prompts, str):
            prompts = [prompts]  # one prompt given as a string, not its characters
        if not prompts or any(not isinstance(p, str) or not p for p in prompts):
            raise ValueError(f"prompts must be a non-empty list of non-empty strings, got {prompts!r}")
        if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be an integer >= 1, got {max_new_tokens!r}")
        self.prompts = list(prompts)
        self.max_new_tokens = max_new_tokens
        self.tokenizer = tokenizer
        self._skipped = False  # warned once that the model cannot generate

    def _tokenizer_of(self, trainer: Any) -> Any:
        if self.tokenizer is not None:
            return self.tokenizer
        dataset = getattr(getattr(trainer, "train_loader", None), "dataset", None)
        found = getattr(dataset, "tokenizer", None)
        if found is not None:
            return found
        from trainengine.data import ByteTokenizer

        return ByteTokenizer()  # the built-in corpora are byte-level

    def on_eval_end(self, trainer: Any, metrics: dict[str, float]) -> None:
        """Generate one completion per prompt with the current weights and log them."""
        from trainengine.models import unwrap_model
        from trainengine.models._gpt import generate_text

        model = unwrap_model(trainer.model)
        task_type = getattr(getattr(trainer, "task_spec", None), "task_type", "language_modeling")
        if task_type != "language_modeling" or not callable(getattr(model, "generate", None)):
            if not self._skipped:
                self._skipped = True
                logger.warning(
                    "monitoring.sample_prompts: skipped, the %s model of this %s run cannot generate text "
                    "(sample prompts are for language models)",
                    type(model).__name__,
                    task_type,
                )
            return
        tokenizer = self._tokenizer_of(trainer)
        samples = [
            {
                "prompt": prompt,
                "completion": generate_text(
                    model, tokenizer, prompt, max_new_tokens=self.max_new_tokens, temperature=0
                ),
            }
            for prompt in self.prompts
        ]
        state = trainer.state
        trainer.callbacks.fire(
            "on_log", trainer, {"type": "samples", "step": state.step, "epoch": state.epoch, "samples": samples}
        )


def build_sample_prompts(config: TrainingConfig) -> SamplePrompts | None:
    """The :class:`SamplePrompts` callback ``monitoring.sample_prompts`` asks for, or None when empty.

    Example:
        >>> from trainengine import TrainingConfig
        >>> build_sample_prompts(TrainingConfig()) is None
        True
    """
    m = config.monitoring
    if not m.sample_prompts:
        return None
    return SamplePrompts(m.sample_prompts, max_new_tokens=m.sample_max_new_tokens)
