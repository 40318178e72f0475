"""Task builders behind ``data.task``: ``name -> builder(dataset) -> TaskSpec``.

They are the built-in entries of :data:`trainengine.registries.TASKS`; ``data.task: auto`` uses
the data set's natural task (:meth:`TaskSpec.for_dataset`) and needs no builder. A user task
joins with :func:`trainengine.registries.register_task`.

Example:
    >>> from trainengine.registries import TASKS
    >>> TASKS.get("regression")("diabetes").task_type
    'regression'
"""

from __future__ import annotations

from trainengine.tasks._spec import TaskSpec

__all__ = [
    "classification_task",
    "regression_task",
    "language_modeling_task",
    "vision_task",
    "reward_task",
    "build_task_spec",
]


def classification_task(dataset: str) -> TaskSpec:
    """Classification with the data set's class count (2 when its natural task has none)."""
    natural = TaskSpec.for_dataset(dataset)
    return TaskSpec.classification(dataset, natural.num_classes or 2)


def regression_task(dataset: str) -> TaskSpec:
    """Regression of float targets."""
    return TaskSpec.regression(dataset)


def language_modeling_task(dataset: str) -> TaskSpec:
    """Next-token prediction."""
    return TaskSpec.language_modeling(dataset)


def vision_task(dataset: str) -> TaskSpec:
    """Image classification with the small CNN (the digits as 8x8 images)."""
    return TaskSpec.vision_tiny(dataset)


def reward_task(dataset: str) -> TaskSpec:
    """Per-step scores of reasoning chains (a process reward model)."""
    return TaskSpec.reward(dataset)


def build_task_spec(task: str, dataset: str) -> TaskSpec:
    """The TaskSpec for ``data.task`` (``auto`` = the data set's natural task) on ``dataset``.

    Raises:
        ConfigError: ``task`` is not registered (listing the registered tasks).
        TaskError: the builder cannot make a task for this data set.

    Example:
        >>> build_task_spec("auto", "digits").task_type
        'classification'
    """
    from trainengine.registries import TASKS

    if task == "auto":
        return TaskSpec.for_dataset(dataset)
    spec = TASKS.get(task)(dataset)
    if not isinstance(spec, TaskSpec):
        from trainengine.errors import ConfigError

        raise ConfigError(
            f"task builder '{task}' returned {type(spec).__name__}; it must return a trainengine.tasks.TaskSpec"
        )
    return spec
