"""The seeds' config spellings: one table (config/_aliases.py) used by files, dicts, attributes and --set.

Seed snippets are copied verbatim from /work/shared/seeds/ (file and lines cited at each); only the
object they start from changes (seed 001's ``from config import get_lora_config`` is another
project's import path: ``TrainingConfig()`` stands in for it).
"""

from __future__ import annotations

import copy
import pickle
import re
from pathlib import Path

import pytest
import yaml

from trainengine.cli.main import main
from trainengine.config import TrainingConfig, TrainingConfigBuilder, TrainingSection, apply_overrides, parse_override
from trainengine.config._aliases import CONFIG_ALIASES, SEED_SECTIONS, find_alias
from trainengine.config._sections import SECTION_TYPES
from trainengine.errors import ConfigError

REPO = Path(__file__).resolve().parents[2]
SEED_YAML_FILE = REPO / "configs" / "shakespeare_baseline.yaml"

# Seed 002 (002_df445be1a0a37746.txt) l.1505-1539, verbatim.
SEED_002_YAML = """\
# configs/shakespeare_baseline.yaml

experiment:
  name: shakespeare_baseline
  project: tiny-transformer
  tags: [baseline, shakespeare]

model:
  vocab_size: 1000
  d_model: 512
  n_heads: 8
  n_layers: 6
  d_ff: 2048
  max_seq_len: 512
  dropout: 0.1

training:
  batch_size: 32
  learning_rate: 1e-4
  weight_decay: 0.01
  grad_clip: 1.0
  max_steps: 50000
  warmup_steps: 5000
  eval_interval: 500
  log_interval: 100
  checkpoint_interval: 1000

data:
  train_file: data/shakespeare_train.txt
  val_file: data/shakespeare_val.txt
  seq_len: 256

paths:
  checkpoint_dir: checkpoints/shakespeare_baseline
  log_dir: logs/shakespeare_baseline
"""

ALIAS_LEAVES = {row.alias.rsplit(".", 1)[-1] for row in CONFIG_ALIASES} | set(SEED_SECTIONS)


def _keys(tree: object) -> set[str]:
    """Every mapping key at any depth."""
    if isinstance(tree, dict):
        return set(tree) | {k for v in tree.values() for k in _keys(v)}
    return set()


def _assert_seed_002_values(config: TrainingConfig) -> None:
    assert config.tracking.experiment_name == "shakespeare_baseline"
    assert config.tracking.project == "tiny-transformer"
    assert config.tracking.tags == ["baseline", "shakespeare"]
    assert (config.model.d_model, config.model.n_heads, config.model.d_ff) == (512, 8, 2048)
    assert config.training.learning_rate == 1e-4  # YAML 1.1 reads "1e-4" as text; the field reads the number
    assert config.optimizer.weight_decay == 0.01
    assert config.training.max_grad_norm == 1.0
    assert config.scheduler.warmup_steps == 5000
    assert config.training.eval_interval_steps == 500
    assert config.training.log_interval_steps == 100
    assert config.checkpointing.save_every_n_steps == 1000
    assert config.checkpointing.enabled  # an interval means checkpoints are wanted
    assert config.data.max_length == 256
    assert config.checkpointing.checkpoint_dir == "checkpoints/shakespeare_baseline"
    assert config.tracking.output_dir == "logs/shakespeare_baseline"


# -- seed 002's file ---------------------------------------------------------------------------


def test_repository_copy_of_the_seed_yaml_is_verbatim() -> None:
    text = SEED_YAML_FILE.read_text(encoding="utf-8")
    body = "".join(
        line for line in text.splitlines(keepends=True) if line.startswith("# configs/") or not line.startswith("#")
    )
    assert body.lstrip("\n") == SEED_002_YAML


def test_seed_002_yaml_validates_as_written_with_every_value_on_its_engine_field(tmp_path: Path) -> None:
    path = tmp_path / "shakespeare_baseline.yaml"
    path.write_text(SEED_002_YAML, encoding="utf-8")
    config = TrainingConfig.load(path)  # data/shakespeare_train.txt need not exist to validate
    _assert_seed_002_values(config)
    _assert_seed_002_values(TrainingConfig.load(SEED_YAML_FILE))


def test_config_show_and_save_print_canonical_names_only(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "show", "--config", str(SEED_YAML_FILE)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    engine_names = {n for model in SECTION_TYPES.values() for n in model.model_fields} | set(
        TrainingConfig.model_fields
    )
    seed_only = ALIAS_LEAVES - engine_names
    assert {"grad_clip", "seq_len", "experiment", "paths", "log_dir"} <= seed_only
    assert not _keys(shown) & seed_only
    assert set(shown) == set(TrainingConfig.model_fields)  # no experiment: / paths: sections
    assert shown["training"]["max_grad_norm"] == 1.0 and "grad_clip" not in shown["training"]
    saved = TrainingConfig.load(SEED_YAML_FILE).save(tmp_path / "saved.yaml")
    text = saved.read_text(encoding="utf-8")
    assert not _keys(yaml.safe_load(text)) & seed_only
    assert TrainingConfig.load(saved) == TrainingConfig.load(SEED_YAML_FILE)


def test_cli_set_takes_seed_spellings_and_a_preset_layer_gives_way(capsys: pytest.CaptureFixture[str]) -> None:
    # baseline's scheduler.warmup_ratio is cleared by the file's training.warmup_steps, as by scheduler.warmup_steps.
    code = main(
        [
            "config", "show", "--preset", "baseline", "--config", str(SEED_YAML_FILE), "--format", "json",
            "--set", "training.grad_clip=0.25", "--set", "experiment.name=run_b", "--set", "lr_schedule=linear",
        ]
    )  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0, out
    shown = yaml.safe_load(out)
    assert shown["training"]["max_grad_norm"] == 0.25
    assert shown["tracking"]["experiment_name"] == "run_b"
    assert shown["scheduler"]["name"] == "linear"
    assert (shown["scheduler"]["warmup_steps"], shown["scheduler"]["warmup_ratio"]) == (5000, 0.0)


# -- one field under two names -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ("training:\n  max_grad_norm: 0.5\n", ("training.grad_clip", "training.max_grad_norm")),
        ("optimizer:\n  weight_decay: 0.1\n", ("training.weight_decay", "optimizer.weight_decay")),
        ("experiment_name: other\n", ("experiment.name", "experiment_name")),
        ("data:\n  max_length: 64\n", ("data.seq_len", "data.max_length")),
    ],
)
def test_a_file_setting_a_name_and_its_alias_is_an_error_naming_both(
    tmp_path: Path, extra: str, named: tuple[str, str]
) -> None:
    # Merge the extra lines into the seed's own sections, as a user editing the file would.
    data = yaml.safe_load(SEED_002_YAML)
    for key, value in yaml.safe_load(extra).items():
        data[key] = {**data[key], **value} if isinstance(value, dict) and key in data else value
    path = tmp_path / "both.yaml"
    path.write_text(yaml.safe_dump(data), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        TrainingConfig.load(path)
    problem = next(p for p in info.value.problems if "both set" in p)
    assert all(name in problem for name in named), problem
    assert str(path) in str(info.value)


def test_two_seed_names_of_one_field_and_set_twice_on_the_command_line_are_errors() -> None:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(training={"eval_steps": 50, "eval_interval": 500})
    assert info.value.problems == [
        "training.eval_interval and training.eval_steps are both set — both are names of "
        "training.eval_interval_steps; keep one"
    ]
    with pytest.raises(ConfigError) as info:
        apply_overrides({}, ["training.max_grad_norm=1", "grad_clip=2"])
    assert info.value.problems == [
        "grad_clip and training.max_grad_norm are both set — grad_clip is another name of "
        "training.max_grad_norm; keep one"
    ]
    # The same spelling twice is not ambiguous: the last one wins, as before.
    assert apply_overrides({}, ["grad_clip=1", "grad_clip=2"]) == {"training": {"max_grad_norm": 2}}


# -- attributes (seed 001 and seed 002) ----------------------------------------------------------


def test_seed_001_attribute_writes_land_on_the_engine_fields(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = TrainingConfig()
    # seed 001 l.170-171
    config.training.per_device_train_batch_size = 8
    config.training.gradient_accumulation_steps = 2
    # seed 001 l.193-194
    config.training.lr_scheduler_type = "cosine"
    config.training.warmup_steps = 500
    # seed 001 l.231
    config.training.weight_decay = 0.01
    # seed 001 l.243
    config.training.max_grad_norm = 1.0
    # seed 001 l.257
    config.training.eval_steps = 50
    # seed 001 l.368
    config.experiment_name = "quick_exp"
    assert (config.training.batch_size, config.scheduler.name, config.scheduler.warmup_steps) == (8, "cosine", 500)
    assert (config.optimizer.weight_decay, config.training.eval_interval_steps) == (0.01, 50)
    assert config.tracking.experiment_name == "quick_exp"
    # Reads give the same values back under the seed's names.
    assert (config.training.per_device_train_batch_size, config.training.weight_decay) == (8, 0.01)
    Path("configs").mkdir()
    # seed 001 l.326
    config.save(f"configs/{config.experiment_name}.json")
    text = Path("configs/quick_exp.json").read_text(encoding="utf-8")
    assert "per_device_train_batch_size" not in text and "eval_steps" not in text
    assert TrainingConfig.load("configs/quick_exp.json") == config


def test_seed_001_warmup_ratio_and_hugging_face_schedule_names() -> None:
    config = TrainingConfig()
    # seed 001 l.199
    config.training.warmup_ratio = 0.1  # 10% of total steps
    assert config.scheduler.warmup_ratio == 0.1
    config.training.lr_scheduler_type = "constant_with_warmup"  # Hugging Face's name of warmup + constant
    assert config.scheduler.name == "constant"
    with pytest.raises(ConfigError, match=r"scheduler\.name: unknown schedule 'polynomial' — available: .*cosine"):
        config.training.lr_scheduler_type = "polynomial"


def test_seed_002_training_loop_reads_flat_names() -> None:
    config = TrainingConfig.load(SEED_YAML_FILE)
    global_step = 1000
    # seed 002 l.1989-1992, 2006, 2017 read these from the config
    assert config.grad_clip == config.training.max_grad_norm == 1.0
    assert global_step % config.log_interval == 0 and config.log_interval == 100
    assert global_step % config.eval_interval == 0 and config.eval_interval == 500
    assert config.max_epochs == config.training.epochs
    assert config.experiment.name == "shakespeare_baseline" and config.paths.log_dir == "logs/shakespeare_baseline"
    config.paths.checkpoint_dir = "ckpt"
    config.experiment = {"tags": ["a"]}
    assert (config.checkpointing.checkpoint_dir, config.tracking.tags) == ("ckpt", ["a"])


def test_value_shapes_flat_optimizer_and_schedule_names() -> None:
    config = TrainingConfig.from_dict(
        {"optimizer": "sgd", "training": {"lr_schedule": "linear", "checkpoint_interval": 10}, "seq_len": 64}
    )
    assert (config.optimizer.name, config.scheduler.name, config.data.max_length) == ("sgd", "linear", 64)
    assert config.checkpointing.enabled and config.checkpointing.save_every_n_steps == 10
    # The same file saying checkpointing.enabled: false keeps it off: an implied value never overrides.
    off = TrainingConfig(training={"checkpoint_interval": 10}, checkpointing={"enabled": False})
    assert not off.checkpointing.enabled
    config.optimizer = "adam"
    assert config.optimizer.name == "adam"
    with pytest.raises(ConfigError, match="optimizer.name: unknown optimizer 'adamx'"):
        TrainingConfig(optimizer="adamx")


def test_assignment_errors_name_the_engine_field_and_change_nothing() -> None:
    config = TrainingConfig()
    with pytest.raises(ConfigError, match=r"training\.max_grad_norm: Input should be greater than 0"):
        config.training.grad_clip = -1.0
    assert config.training.max_grad_norm == 1.0
    config.training = {"grad_clip": 0.5, "weight_decay": 0.2}  # a whole section, seed names inside
    assert (config.training.max_grad_norm, config.optimizer.weight_decay) == (0.5, 0.2)


def test_fields_in_other_sections_follow_the_config_the_section_was_read_from() -> None:
    config = TrainingConfig()
    for other in (copy.deepcopy(config), config.model_copy(deep=True), pickle.loads(pickle.dumps(config))):
        other.training.weight_decay = 0.3
        assert other.optimizer.weight_decay == 0.3
        assert config.optimizer.weight_decay == 0.01  # the original is untouched
    assert TrainingConfig().training == config.training  # the link never makes sections unequal
    with pytest.raises(AttributeError, match="another name of optimizer.weight_decay, which is in another section"):
        _ = TrainingSection().weight_decay
    assert TrainingSection().grad_clip == 1.0  # the same section needs no config


# -- planned fields ------------------------------------------------------------------------------


def test_seed_001_fields_are_the_engines_own(tmp_path: Path) -> None:
    """Planned in the seed-API issue, built by the reward-model issue: plain fields now."""
    config = TrainingConfig()
    config.model.mlp_dropout = 0.15  # seed 001 l.72: "Increase dropout"
    assert config.model.mlp_dropout == 0.15 and config.data.use_prm800k is True
    path = tmp_path / "prm.yaml"
    path.write_text("model:\n  mlp_hidden_dims: [1024, 256]\ndata:\n  use_reveal: false\n", encoding="utf-8")
    loaded = TrainingConfig.load(path)
    assert loaded.model.mlp_hidden_dims == [1024, 256] and loaded.data.use_reveal is False
    assert parse_override("data.use_eqasc=false") == ("data", "use_eqasc", False)
    assert not any(row.canonical is None for row in CONFIG_ALIASES)  # nothing planned is left


# -- the table itself ----------------------------------------------------------------------------


def test_every_row_maps_a_name_the_engine_lacks_onto_a_field_it_has() -> None:
    for row in CONFIG_ALIASES:
        section, _, leaf = row.alias.partition(".")
        if section in SECTION_TYPES and leaf:
            # A row for an existing field would hide it; a planned row is removed by the issue that builds it.
            assert leaf not in SECTION_TYPES[section].model_fields, row.alias
        if row.canonical is None:
            assert row.note.startswith("issue "), row.alias
            continue
        target_section, _, field = row.canonical.partition(".")
        assert field in SECTION_TYPES[target_section].model_fields, row.canonical
        assert re.fullmatch(r"\d{3} l\.[\d ,;\-l.]+", row.seeds.split("; ")[0]), row.seeds
    assert len({row.alias for row in CONFIG_ALIASES}) == len(CONFIG_ALIASES)
    assert find_alias("grad_clip") is find_alias("training.grad_clip")
    assert find_alias("weight_decay") is None  # a real flat field (optimizer.weight_decay) stays the engine's


def test_docs_list_every_seed_spelling() -> None:
    text = (REPO / "docs" / "config.md").read_text(encoding="utf-8")
    section = text.split("## Seed spellings", 1)[1].split("\n## ", 1)[0]
    missing = [row.alias for row in CONFIG_ALIASES if f"`{row.alias}`" not in section]
    assert not missing, f"docs/config.md 'Seed spellings' misses {missing}"


def test_builder_layers_accept_seed_spellings() -> None:
    config = (
        TrainingConfigBuilder.baseline().with_overrides({"training": {"grad_clip": 0.3, "warmup_steps": 7}}).build()
    )
    assert (config.training.max_grad_norm, config.scheduler.warmup_steps, config.scheduler.warmup_ratio) == (
        0.3,
        7,
        0.0,
    )
