"""Transfer learning: freezing by name, discriminative learning rates, gradual unfreezing.

The ``transfer:`` config section, applied by the Trainer through one :class:`TransferSchedule`
(docs/transfer-learning.md walks through each rule with examples):

* **Patterns** are ``fnmatch`` patterns (case-sensitive) over parameter names as
  ``model.named_parameters()`` spells them; a pattern that names a module (``head``,
  ``transformer.h.0``) covers all its parameters. A pattern that matches nothing is a
  :class:`~trainengine.errors.ConfigError` that shows real names.
* **Which parameters train at epoch e**, first rule that applies:
  1. matched by ``unfreeze_at_epoch`` (earliest epoch ``E`` among its matches): trains from ``E`` on
     (from 0 when ``unfreeze`` matches too);
  2. matched by ``unfreeze``: trains;
  3. matched by ``freeze``: does not train;
  4. ``schedule: progressive``: trains when its layer group is open in this phase (below);
  5. otherwise: trains when it did when training started (``requires_grad`` as the model came:
     a LoRA model's frozen base weights stay frozen unless rule 1 or 2 names them).
* **Layer groups** (input -> output): ``layer_groups`` patterns (a parameter joins the LAST
  group that matches it, so a catch-all ``"*"`` may come first; parameters no pattern matches
  join the first, lowest-rate group), or found from the model: the largest ``nn.ModuleList`` of
  two or more blocks of one class (``layers``, ``h``, ``encoder.layer``, ``blocks``) gives
  ``embeddings`` (parameters registered before it), one group per block, and ``head``
  (parameters registered after it); without such a list, each top-level child of the model is
  a group. A tied weight (GPT's embedding = ``lm_head``) belongs to the group nearest the output.
* **Discriminative rates**: group ``i`` of ``n`` gets ``learning_rate * lr_decay ** (n - 1 - i)``.
* **progressive** (seed 003): phase 1 (``epoch < phase_epochs[0]``) the head group alone at
  ``learning_rate``; phase 2 (``< phase_epochs[0] + phase_epochs[1]``) the head and the top half of
  the other groups with discriminative rates (``lr_decay``, 0.5 when null); phase 3 every group at
  a tenth of its phase-2 rate.

Every parameter that trains at any epoch is in the optimizer from the start; one that does not
train yet has ``requires_grad=False`` and no gradient, so the optimizer skips it entirely (no
step, no moment, no decoupled weight decay) and its optimizer state starts fresh when it thaws.
The frozen set is recomputed from the epoch at every epoch start (and at train start, so a
resumed run has the set of its epoch); a phase's lr change multiplies the group's lr and the
schedule's base lr, and is recorded in the optimizer's groups (``transfer_factor``), which the
checkpoint keeps.
"""

from __future__ import annotations

import fnmatch
import logging
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from torch import nn

from trainengine.engine._optim import no_decay_ids
from trainengine.errors import ConfigError

if TYPE_CHECKING:
    from trainengine.config import TrainingConfig
    from trainengine.config._sections import TransferSection
    from trainengine.engine._trainer import Trainer

__all__ = ["LayerGroup", "TransferSchedule", "find_layer_groups", "transfer_active"]

logger = logging.getLogger("trainengine")

_LATER = 10**9  # an epoch after every unfreezing
PROGRESSIVE_DECAY = 0.5  # lr_decay of the progressive schedule when transfer.lr_decay is null
PHASE3_FACTOR = 0.1  # progressive phase 3: every group at a tenth of its phase-2 rate
GROUP_KEY = "transfer_group"  # optimizer param-group keys (saved in checkpoints with the group)
FACTOR_KEY = "transfer_factor"


def transfer_active(section: TransferSection) -> bool:
    """True when the ``transfer:`` section asks for anything (its defaults change nothing).

    Example:
        >>> from trainengine.config._sections import TransferSection
        >>> transfer_active(TransferSection()), transfer_active(TransferSection(freeze=["0.*"]))
        (False, True)
    """
    return bool(
        section.freeze
        or section.unfreeze
        or section.layer_groups
        or section.lr_decay is not None
        or section.unfreeze_at_epoch
        or section.schedule != "none"
    )


def _matches(name: str, pattern: str) -> bool:
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, pattern + ".*")


@dataclass(frozen=True)
class LayerGroup:
    """One layer group: its label and the names of its parameters (input -> output order).

    Attributes:
        label: ``embeddings``, a block's module name, ``head``, or the ``layer_groups`` pattern.
        names: the parameter names (a tied weight under the name ``named_parameters`` gives it).
    """

    label: str
    names: tuple[str, ...]


def _block_list(model: nn.Module) -> str | None:
    """Name of the largest ``nn.ModuleList`` of >= 2 same-class composite blocks, or None."""
    best: tuple[str, int] | None = None
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or len(module) < 2:
            continue
        if len({type(child) for child in module}) != 1:
            continue
        # Blocks are composite (an embedding table list is not a stack of layers) and hold weights.
        if not all(any(True for _ in c.children()) and any(True for _ in c.parameters()) for c in module):
            continue
        if best is None or len(module) > best[1]:
            best = (name, len(module))
    return None if best is None else best[0]


def _assign(model: nn.Module, patterns: list[str]) -> tuple[list[str], dict[int, int]]:
    """(group labels, ``id(param) -> group index``) for every parameter of ``model``."""
    named = list(model.named_parameters(remove_duplicate=False))
    group_of: dict[int, int] = {}

    def put(param: nn.Parameter, index: int) -> None:
        group_of[id(param)] = max(group_of.get(id(param), index), index)  # nearest the output wins

    if patterns:
        for name, param in named:
            hits = [i for i, pattern in enumerate(patterns) if _matches(name, pattern)]
            put(param, hits[-1] if hits else 0)
        return list(patterns), group_of
    blocks = _block_list(model)
    if blocks is not None:
        prefix = f"{blocks}." if blocks else ""
        count = len(cast(nn.ModuleList, model.get_submodule(blocks)))
        seen_block = False
        for name, param in named:
            if name.startswith(prefix):
                seen_block = True
                put(param, 1 + int(name[len(prefix) :].split(".", 1)[0]))
            else:
                put(param, count + 1 if seen_block else 0)
        labels = ["embeddings", *(f"{prefix}{i}" for i in range(count)), "head"]
    else:
        tops: list[str] = []
        for name, _ in named:
            top = name.split(".", 1)[0]
            if top not in tops:
                tops.append(top)
        for name, param in named:
            put(param, tops.index(name.split(".", 1)[0]))
        labels = tops
    # Found groups that hold nothing (no embeddings, no head) are dropped; indices close up.
    used = sorted(set(group_of.values()))
    remap = {old: new for new, old in enumerate(used)}
    return [labels[i] for i in used], {pid: remap[g] for pid, g in group_of.items()}


def find_layer_groups(model: nn.Module, patterns: list[str] | None = None) -> list[LayerGroup]:
    """The layer groups of ``model``, from the input to the output (the rules of the module docstring).

    Args:
        model: any ``nn.Module``.
        patterns: ``transfer.layer_groups``; None or empty = found from the model.

    Returns:
        One :class:`LayerGroup` per group; with patterns, a group no parameter ends up in is kept
        (empty), so depth counts as written.

    Example:
        >>> class Net(nn.Module):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.embed = nn.Embedding(10, 4)
        ...         self.layers = nn.ModuleList(nn.Sequential(nn.Linear(4, 4), nn.ReLU()) for _ in range(2))
        ...         self.head = nn.Linear(4, 2)
        >>> [g.label for g in find_layer_groups(Net())]
        ['embeddings', 'layers.0', 'layers.1', 'head']
    """
    labels, group_of = _assign(model, list(patterns or []))
    names: list[list[str]] = [[] for _ in labels]
    for name, param in model.named_parameters():
        names[group_of[id(param)]].append(name)
    return [LayerGroup(label, tuple(n)) for label, n in zip(labels, names, strict=True)]


def _some_names(names: list[str], n: int = 8) -> str:
    if len(names) <= n:
        return ", ".join(names)
    step = len(names) / n
    picked = [names[int(i * step)] for i in range(n - 1)] + [names[-1]]
    return ", ".join(picked) + f" ({len(names)} in all)"


class TransferSchedule:
    """Freezing, discriminative learning rates and (gradual / progressive) unfreezing for one model.

    The Trainer builds it from ``config.transfer`` (:meth:`from_config`), takes the optimizer's
    parameter groups from :meth:`param_groups` and calls it as a callback: at train start and
    at every epoch start it sets which parameters train and the phase's learning rates; at the
    end of training every ``requires_grad`` is restored to what the model came with.

    Args:
        model: the model to train (plain, not compiled).
        section: the ``transfer:`` section.

    Raises:
        ConfigError: a pattern matches no parameter (the message shows real names), the
            progressive ``phase_epochs`` are not two non-negative counts, or no parameter would
            ever train.

    Example:
        >>> from trainengine.config._sections import TransferSection
        >>> model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
        >>> ts = TransferSchedule(model, TransferSection(freeze=["0"], lr_decay=0.1))
        >>> ts.labels, ts.trainable_names(0)
        (['0', '2'], ['2.weight', '2.bias'])
        >>> [g["lr"] for g in ts.param_groups(weight_decay=0.01, learning_rate=1.0)]
        [1.0, 1.0]
    """

    rank_zero_only = False  # every process freezes the same parameters

    def __init__(self, model: nn.Module, section: TransferSection) -> None:
        self.section = section
        self.model = model
        named = list(model.named_parameters(remove_duplicate=False))
        self._params: dict[int, nn.Parameter] = {}
        self._names: dict[int, list[str]] = {}
        for name, param in named:
            self._params.setdefault(id(param), param)
            self._names.setdefault(id(param), []).append(name)
        self._initial = {pid: p.requires_grad for pid, p in self._params.items()}
        all_names = [name for name, _ in model.named_parameters()]
        problems: list[str] = []

        def matched(patterns: list[str], field: str) -> set[int]:
            ids: set[int] = set()
            for pattern in patterns:
                hit = {id(p) for name, p in named if _matches(name, pattern)}
                if not hit:
                    problems.append(
                        f"transfer.{field}: pattern {pattern!r} matches no parameter of {type(model).__name__}; "
                        f"its parameter names are: {_some_names(all_names)} — patterns are fnmatch patterns over "
                        "these names (e.g. 'layers.0.*'), and a module name covers its parameters"
                    )
                ids |= hit
            return ids

        self._freeze = matched(list(section.freeze), "freeze")
        self._unfreeze = matched(list(section.unfreeze), "unfreeze")
        self._thaw_epoch: dict[int, int] = {}
        for epoch in sorted(section.unfreeze_at_epoch):
            if epoch < 0:
                problems.append(f"transfer.unfreeze_at_epoch: epoch {epoch} is negative; epochs count from 0")
            for pid in matched(list(section.unfreeze_at_epoch[epoch]), f"unfreeze_at_epoch.{epoch}"):
                self._thaw_epoch.setdefault(pid, epoch)  # sorted: the earliest epoch
        matched(list(section.layer_groups), "layer_groups")
        self.progressive = section.schedule == "progressive"
        self.phase_epochs: tuple[int, int] = (0, 0)
        if self.progressive:
            pe = list(section.phase_epochs)
            if len(pe) != 2 or any(e < 0 for e in pe):
                problems.append(
                    f"transfer.phase_epochs: {pe} — give two non-negative epoch counts [phase 1, phase 2] "
                    "(phase 3 is the rest of the run), e.g. [2, 2]"
                )
            else:
                self.phase_epochs = (pe[0], pe[1])
        if problems:
            raise ConfigError(problems)

        if section.layer_groups or section.lr_decay is not None or self.progressive:
            self.labels, self._group_of = _assign(model, list(section.layer_groups))
        else:
            self.labels, self._group_of = ["all"], dict.fromkeys(self._params, 0)
        default_decay = PROGRESSIVE_DECAY if self.progressive else 1.0
        self.lr_decay: float = section.lr_decay if section.lr_decay is not None else default_decay
        self._no_decay = no_decay_ids(model)
        self._applied: set[int] | None = None  # ids that train as last applied
        if not self.ever_trained():
            raise ConfigError(
                f"transfer: no parameter of {type(model).__name__} would ever train (transfer.freeze matches all "
                "that are trainable and nothing unfreezes them); narrow transfer.freeze or add transfer.unfreeze "
                "patterns (e.g. the head)"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_config(cls, model: nn.Module, config: TrainingConfig) -> TransferSchedule | None:
        """The schedule of ``config.transfer``, or None when the section is at its defaults."""
        section = config.transfer
        return cls(model, section) if transfer_active(section) else None

    # ------------------------------------------------------------------ the rules
    @property
    def num_groups(self) -> int:
        """Number of layer groups (1 without discriminative rates or phases)."""
        return len(self.labels)

    def phase(self, epoch: int) -> int:
        """The progressive phase (1, 2 or 3) of ``epoch``; 0 without ``schedule: progressive``."""
        if not self.progressive:
            return 0
        p1, p2 = self.phase_epochs
        return 1 if epoch < p1 else 2 if epoch < p1 + p2 else 3

    def open_groups(self, epoch: int) -> range:
        """Layer groups whose parameters train at ``epoch`` under the phases (all without phases)."""
        n = self.num_groups
        phase = self.phase(epoch)
        if phase == 1:
            return range(n - 1, n)
        if phase == 2:
            return range(n - 1 - math.ceil((n - 1) / 2), n)
        return range(n)

    def factor(self, group: int, epoch: int) -> float:
        """Multiplier of ``training.learning_rate`` for layer group ``group`` at ``epoch``."""
        depth = self.num_groups - 1 - group
        if self.phase(epoch) == 1:
            return 1.0 if depth == 0 else self.lr_decay**depth
        return self.lr_decay**depth * (PHASE3_FACTOR if self.phase(epoch) == 3 else 1.0)

    def _trains(self, pid: int, epoch: int) -> bool:
        thaw = self._thaw_epoch.get(pid)
        if thaw is not None:
            return epoch >= thaw or pid in self._unfreeze
        if pid in self._unfreeze:
            return True
        if pid in self._freeze:
            return False
        if self.progressive:
            return self._initial[pid] and self._group_of[pid] in self.open_groups(epoch)
        return self._initial[pid]

    def trainable_names(self, epoch: int) -> list[str]:
        """Names of the parameters that train at ``epoch`` (one name per tied weight)."""
        return [self._names[pid][0] for pid in self._params if self._trains(pid, epoch)]

    def ever_trained(self) -> list[nn.Parameter]:
        """Every parameter that trains at some epoch (the optimizer holds exactly these)."""
        return [p for pid, p in self._params.items() if self._trains(pid, _LATER)]

    def param_groups(self, weight_decay: float, learning_rate: float) -> list[dict[str, Any]]:
        """Optimizer parameter groups: per layer group, weight matrices with decay and the rest without.

        Every parameter that trains at some epoch is included (one that trains later has no
        gradient until then, so the optimizer skips it). Each group carries its ``lr`` at epoch
        0 and the keys ``transfer_group`` (layer-group index) and ``transfer_factor`` (its lr
        over ``learning_rate``).

        Args:
            weight_decay: ``optimizer.weight_decay`` for weight matrices.
            learning_rate: ``training.learning_rate`` (the head's rate).

        Returns:
            The groups, input first; empty ones left out.
        """
        ever = {id(p) for p in self.ever_trained()}
        groups: list[dict[str, Any]] = []
        for index in range(self.num_groups):
            members = [p for pid, p in self._params.items() if pid in ever and self._group_of[pid] == index]
            factor = self.factor(index, 0)
            for decayed in (True, False):
                params = [p for p in members if (id(p) not in self._no_decay) == decayed]
                if params:
                    groups.append(
                        {
                            "params": params,
                            "weight_decay": weight_decay if decayed else 0.0,
                            "lr": learning_rate * factor,
                            GROUP_KEY: index,
                            FACTOR_KEY: factor,
                        }
                    )
        return groups

    def describe(self, epoch: int) -> list[dict[str, Any]]:
        """Per layer group at ``epoch``: label, parameter count, how many of them train, lr factor."""
        rows = []
        for index, label in enumerate(self.labels):
            pids = [pid for pid in self._params if self._group_of[pid] == index]
            rows.append(
                {
                    "group": label,
                    "params": sum(self._params[pid].numel() for pid in pids),
                    "training": sum(self._params[pid].numel() for pid in pids if self._trains(pid, epoch)),
                    "lr_factor": self.factor(index, epoch),
                }
            )
        return rows

    # ------------------------------------------------------------------ applying
    def apply(self, epoch: int, optimizer: Any = None, scheduler: Any = None) -> None:
        """Set ``requires_grad`` for ``epoch`` and move the optimizer groups to the epoch's lr factors.

        A parameter that stops training loses its gradient (so no stale gradient is stepped).
        A factor change multiplies the group's lr, its ``initial_lr`` / ``max_lr`` / ``min_lr``,
        and the schedule's base lr for that group by new / old, so the schedule's shape goes on
        and a rollback's lr reduction is kept.

        Args:
            epoch: the epoch about to run.
            optimizer: the optimizer built from :meth:`param_groups` (None: flags only).
            scheduler: its :class:`~trainengine.engine.schedules.LRScheduleHandle`, or None.
        """
        training = set()
        for pid, param in self._params.items():
            want = self._trains(pid, epoch)
            if want:
                training.add(pid)
            if param.requires_grad != want:
                param.requires_grad_(want)
                if not want:
                    param.grad = None
        changed = False
        for index, group in enumerate(optimizer.param_groups if optimizer is not None else []):
            if GROUP_KEY not in group:
                continue
            old, new = float(group[FACTOR_KEY]), self.factor(int(group[GROUP_KEY]), epoch)
            if new != old:
                _rescale(optimizer, scheduler, index, new / old)
                group[FACTOR_KEY] = new
                changed = True
        if changed or training != self._applied:
            total = sum(p.numel() for p in self._params.values())
            trained = sum(self._params[pid].numel() for pid in training)
            phase = f" (phase {self.phase(epoch)})" if self.progressive else ""
            lrs = ", ".join(
                f"{row['group']} x{row['lr_factor']:.3g}" for row in self.describe(epoch) if row["training"]
            )
            logger.info("transfer: epoch %d%s: training %d of %d parameters; lr %s", epoch, phase, trained, total, lrs)
        self._applied = training

    def restore(self) -> None:
        """Give every parameter back the ``requires_grad`` it had when this schedule was built."""
        for pid, param in self._params.items():
            param.requires_grad_(self._initial[pid])

    # ------------------------------------------------------------------ callback events
    def on_train_start(self, trainer: Trainer) -> None:
        """Apply the rules of the epoch the run starts (or resumes) in."""
        self.apply(trainer.state.epoch, trainer.optimizer, trainer.scheduler)

    def on_epoch_start(self, trainer: Trainer, epoch: int) -> None:
        """Gradual unfreezing / phase change at the epoch boundary."""
        self.apply(epoch, trainer.optimizer, trainer.scheduler)

    def on_train_end(self, trainer: Trainer, results: dict[str, Any]) -> None:
        """Restore the model's own ``requires_grad`` flags."""
        self.restore()

    def on_exception(self, trainer: Trainer, exc: BaseException) -> None:
        """Restore the model's own ``requires_grad`` flags."""
        self.restore()


def _rescale(optimizer: Any, scheduler: Any, index: int, ratio: float) -> None:
    """Multiply group ``index``'s learning rate, now and in the schedule from here on, by ``ratio``."""
    group = optimizer.param_groups[index]
    group["lr"] *= ratio
    for key in ("initial_lr", "max_lr", "min_lr"):
        if key in group:
            group[key] *= ratio
    if scheduler is None:
        return
    if isinstance(getattr(scheduler, "base_lrs", None), list):  # the LRScheduleHandle's copy
        scheduler.base_lrs[index] *= ratio
    inner = getattr(scheduler, "scheduler", None)
    for attr in ("base_lrs", "max_lrs", "min_lrs"):
        values = getattr(inner, attr, None)
        if isinstance(values, list) and index < len(values):
            values[index] *= ratio
