"""Issue 18, config part: the ``distributed`` section accepts DDP's and FSDP2's settings."""

from __future__ import annotations

import pytest

from trainengine import ConfigError, TrainingConfig, TrainingConfigBuilder
from trainengine.cli.main import main
from trainengine.config import DistributedSection


def _problems(**fields: object) -> list[str]:
    with pytest.raises(ConfigError) as info:
        TrainingConfig(distributed=fields)
    return list(info.value.problems)


def test_the_defaults_are_one_process_friendly():
    section = DistributedSection()
    assert (section.strategy, section.backend, section.nproc_per_node, section.nnodes) == ("auto", "auto", 1, 1)
    assert (section.find_unused_parameters, section.static_graph, section.sync_batchnorm) == (False, False, True)
    assert (section.bucket_cap_mb, section.timeout_s) == (25.0, 600.0)


@pytest.mark.parametrize("strategy", ["auto", "none", "ddp", "fsdp2"])
@pytest.mark.parametrize("backend", ["auto", "nccl", "gloo"])
def test_every_built_strategy_and_backend_validates(strategy, backend):
    config = TrainingConfigBuilder().with_distributed(strategy=strategy, backend=backend).build()
    assert (config.distributed.strategy, config.distributed.backend) == (strategy, backend)


def test_every_ddp_option_validates_and_round_trips(tmp_path):
    fields = {
        "strategy": "ddp",
        "backend": "gloo",
        "nproc_per_node": 4,
        "nnodes": 2,
        "find_unused_parameters": True,
        "static_graph": True,
        "bucket_cap_mb": 50,
        "sync_batchnorm": False,
        "timeout_s": 30,
        "fsdp_wrap_modules": ["Block"],
        "fsdp_reshard_after_forward": False,
        "fsdp_cpu_offload": True,
        "fsdp_reduce_dtype": "bfloat16",
    }
    config = TrainingConfig(distributed=fields)
    assert config.distributed.model_dump() == {**fields, "bucket_cap_mb": 50.0, "timeout_s": 30.0}
    path = tmp_path / "ddp.yaml"
    config.save(path)
    assert TrainingConfig.load(path).distributed == config.distributed


def test_fsdp2_options_have_their_defaults():
    section = TrainingConfig(distributed={"strategy": "fsdp2"}).distributed
    assert (section.fsdp_wrap_modules, section.fsdp_reshard_after_forward) == ([], True)
    assert (section.fsdp_cpu_offload, section.fsdp_reduce_dtype) == (False, "float32")


@pytest.mark.parametrize(
    "fields,expected",
    [
        ({"strategy": "dp"}, "distributed.strategy: Input should be 'auto', 'none', 'ddp' or 'fsdp2'"),
        ({"backend": "mpi"}, "distributed.backend: Input should be 'auto', 'nccl' or 'gloo'"),
        ({"nproc_per_node": 0}, "distributed.nproc_per_node: Input should be greater than or equal to 1"),
        ({"nnodes": 0}, "distributed.nnodes: Input should be greater than or equal to 1"),
        ({"bucket_cap_mb": 0}, "distributed.bucket_cap_mb: Input should be greater than 0"),
        ({"timeout_s": -5}, "distributed.timeout_s: Input should be greater than 0"),
        ({"timeout_s": True}, "distributed.timeout_s: must be a number, not a boolean"),
        ({"nproc_per_node": True}, "distributed.nproc_per_node: must be a whole number, not a boolean"),
        ({"static_graph": "maybe"}, "distributed.static_graph: Input should be a valid boolean"),
        ({"sync_batchnorm": "sometimes"}, "distributed.sync_batchnorm: Input should be a valid boolean"),
        ({"world_size": 2}, "unknown field distributed.world_size"),
        ({"fsdp_reduce_dtype": "fp8"}, "distributed.fsdp_reduce_dtype: Input should be 'float32' or 'bfloat16'"),
    ],
)
def test_bad_values_are_refused_with_the_field_named(fields, expected):
    (problem,) = _problems(**fields)
    assert problem.startswith(expected), problem


def test_every_problem_of_the_section_is_listed_at_once():
    problems = _problems(strategy="dp", backend="mpi", bucket_cap_mb=-1)
    assert [p.split(":")[0] for p in problems] == [
        "distributed.strategy",
        "distributed.backend",
        "distributed.bucket_cap_mb",
    ]


def test_assignment_is_validated_like_construction():
    config = TrainingConfig()
    config.distributed.strategy = "ddp"
    with pytest.raises(ConfigError, match=r"distributed\.strategy: Input should be"):
        config.distributed.strategy = "fsdp"
    with pytest.raises(ConfigError, match=r"distributed\.timeout_s"):
        config.distributed.timeout_s = 0
    assert config.distributed.strategy == "ddp"


def test_set_overrides_reach_the_section_from_the_cli(capsys):
    code = main(
        [
            "config",
            "show",
            "--set",
            "distributed.strategy=ddp",
            "--set",
            "distributed.bucket_cap_mb=12.5",
            "--set",
            "distributed.sync_batchnorm=false",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "strategy: ddp" in out and "bucket_cap_mb: 12.5" in out and "sync_batchnorm: false" in out
    code = main(["config", "show", "--set", "distributed.strategy=fsdp"])
    err = capsys.readouterr().err
    assert code == 2 and "distributed.strategy" in err and "'fsdp2'" in err


def test_every_field_has_a_description_for_the_reference():
    rows = [row for row in TrainingConfig.explain() if row["path"].startswith("distributed.")]
    assert {row["path"].split(".")[1] for row in rows} == set(DistributedSection.model_fields)
    assert all(len(str(row.get("description", ""))) > 20 for row in rows), rows
