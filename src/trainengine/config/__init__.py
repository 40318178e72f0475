"""Validated configuration: typed sections, presets, a fluent builder, file io and overrides."""

from trainengine.config._aliases import CONFIG_ALIASES, ConfigAlias, find_alias
from trainengine.config._builder import PRESETS, TrainingConfigBuilder, get_preset
from trainengine.config._config import TrainingConfig, deep_merge, read_config_file, read_config_layer
from trainengine.config._overrides import apply_overrides, parse_override
from trainengine.config._sections import (
    SECTION_TYPES,
    CheckpointingSection,
    DataSection,
    DistributedSection,
    ExportSection,
    LoraSection,
    ModelSection,
    MonitoringSection,
    OptimizerSection,
    RegistrySection,
    SchedulerSection,
    TaskSection,
    TrackingSection,
    TrainingSection,
)
from trainengine.config._yaml import ConfigYAMLError, load_yaml

__all__ = [
    "TrainingConfig",
    "TrainingConfigBuilder",
    "PRESETS",
    "get_preset",
    "apply_overrides",
    "parse_override",
    "deep_merge",
    "read_config_file",
    "read_config_layer",
    "load_yaml",
    "ConfigYAMLError",
    "SECTION_TYPES",
    "TrainingSection",
    "OptimizerSection",
    "SchedulerSection",
    "CheckpointingSection",
    "TrackingSection",
    "DataSection",
    "ModelSection",
    "LoraSection",
    "DistributedSection",
    "ExportSection",
    "MonitoringSection",
    "RegistrySection",
    "TaskSection",
    "CONFIG_ALIASES",
    "ConfigAlias",
    "find_alias",
]
