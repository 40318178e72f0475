"""The seeds' own APIs, as the seed documents write them, over the engine's classes.

Each seed example runs with only its imports changed: ``from checkpoint import CheckpointManager``
becomes ``from trainengine.compat.seed002 import CheckpointManager``. Every name here is a thin
adapter over a core class (:mod:`trainengine.checkpoint`, :mod:`trainengine.tracking`,
:class:`trainengine.Trainer`, :mod:`trainengine.engine.schedules`): one training loop, one
checkpoint format (safetensors + JSON, never pickle). ``docs/seed-guide.md`` maps every seed
example to the engine's own way.

Modules:
    seed001: ``get_lora_config()`` and the other reward-model configs of seed 001 (LoRA process reward models).
    seed002: checkpoint manager, logger, tracker and metrics names of seed 002 ("engineering practice").
    seed004: ``ProductionTrainer`` and the schedule helpers of seed 004 ("training strategies").
"""

from trainengine.compat import seed001, seed002, seed004

__all__: list[str] = ["seed001", "seed002", "seed004"]
