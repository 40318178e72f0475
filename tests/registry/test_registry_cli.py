"""``trainengine registry ...``: every command, user errors as one line with exit code 2."""

from __future__ import annotations

import json

import pytest

from trainengine.cli.main import main
from trainengine.registry import ModelRegistry


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("TRAINENGINE_REGISTRY", raising=False)
    monkeypatch.delenv("TRAINENGINE_REGISTRY_ARTIFACTS", raising=False)
    return tmp_path


def _err_line(capsys) -> str:
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err.strip()


def test_register_promote_rollback_and_inspect(in_tmp, trained, capsys):
    assert (
        main(
            [
                "registry",
                "register",
                "digits",
                "1.0.0",
                "--checkpoint",
                str(trained.checkpoint),
                "--metric",
                "val_loss=0.35",
                "--metric",
                "accuracy=0.93",
                "--tag",
                "baseline",
            ]
        )
        == 0
    )
    out = capsys.readouterr().out
    assert out.startswith("registered digits:1.0.0 (checkpoint, sha256 ") and "models-artifacts" in out
    assert (
        main(
            [
                "registry",
                "register",
                "digits",
                "1.1.0",
                "--checkpoint",
                str(trained.run_dir),
                "--task-type",
                "classification",
                "--run-id",
                "manual-run",
            ]
        )
        == 0
    )
    assert main(["registry", "promote", "digits:1.0.0", "production"]) == 0
    assert main(["registry", "promote", "digits:1.1.0", "production", "--reason", "newer"]) == 0
    assert "production -> digits:1.1.0 (was digits:1.0.0)" in capsys.readouterr().out
    assert main(["registry", "rollback", "digits", "production"]) == 0
    assert "production -> digits:1.0.0 (rolled back)" in capsys.readouterr().out

    assert main(["registry", "list", "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [r["model_id"] for r in listed] == ["digits:1.1.0", "digits:1.0.0"]
    assert listed[1]["aliases"] == ["production"] and listed[1]["tags"] == ["baseline"] and "config" not in listed[0]
    assert listed[0]["run_id"] == "manual-run"
    assert main(["registry", "list"]) == 0
    assert "digits:1.0.0" in capsys.readouterr().out

    assert main(["registry", "show", "digits@production", "--json"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["version"] == "1.0.0" and shown["metrics"] == {"val_loss": 0.35, "accuracy": 0.93}
    assert shown["model_spec"]["architecture"] == "mlp" and shown["config"]["model"]["hidden_dims"] == [16]
    assert main(["registry", "show", "digits"]) == 0  # newest active version, as a table
    assert "digits:1.1.0" in capsys.readouterr().out

    assert main(["registry", "history", "digits", "--json"]) == 0
    events = json.loads(capsys.readouterr().out)
    assert [(e["action"], e["to_model"]) for e in events] == [
        ("promote", "digits:1.0.0"),
        ("promote", "digits:1.1.0"),
        ("rollback", "digits:1.0.0"),
    ]
    assert events[1]["reason"] == "newer"
    assert main(["registry", "history", "digits", "--alias", "production"]) == 0
    assert "rollback" in capsys.readouterr().out
    assert main(["registry", "archive", "digits:1.1.0"]) == 0
    assert ModelRegistry(in_tmp / "models.db").get_model("digits").version == "1.0.0"


def test_gates_from_flags_and_config_with_force(in_tmp, weights_pt, capsys):
    (in_tmp / "train.yaml").write_text(
        f"registry:\n  url: {in_tmp / 'team.db'}\n  gates:\n    production:\n      accuracy: '>= 0.9'\n"
    )
    assert main(["registry", "--help"]) == 0
    capsys.readouterr()
    assert (
        main(
            [
                "registry",
                "register",
                "m",
                "1.0.0",
                "--checkpoint",
                str(weights_pt),
                "--metric",
                "accuracy=0.8",
                "--metric",
                "val_loss=0.5",
                "--registry",
                str(in_tmp / "team.db"),
            ]
        )
        == 0
    )
    assert main(["registry", "promote", "m:1.0.0", "production", "--config", "train.yaml"]) == 2
    assert _err_line(capsys) == (
        "error: cannot promote m:1.0.0 to 'production': accuracy = 0.8 fails the gate >= 0.9 — improve the model, "
        "change "
        "the gates of 'production', or pass force=True / --force (recorded in the history)"
    )
    assert (
        main(["registry", "promote", "m:1.0.0", "staging", "--gate", "val_loss<=0.4"]) == 2
    )  # the default models.db does not exist: nothing to promote, and it is not created
    assert "model registry 'models.db' does not exist" in _err_line(capsys)
    assert not (in_tmp / "models.db").exists()
    assert (
        main(
            [
                "registry",
                "promote",
                "m:1.0.0",
                "staging",
                "--gate",
                "val_loss<=0.4",
                "--registry",
                str(in_tmp / "team.db"),
            ]
        )
        == 2
    )
    assert "val_loss = 0.5 fails the gate <= 0.4" in _err_line(capsys)
    assert main(["registry", "promote", "m:1.0.0", "production", "--config", "train.yaml", "--force"]) == 0
    assert "[forced]" in capsys.readouterr().out
    with ModelRegistry(in_tmp / "team.db") as reg:
        (event,) = reg.history("m")
        assert event["forced"] and event["details"]["gate_failures"] == ["accuracy = 0.8 fails the gate >= 0.9"]


def test_registry_from_environment(in_tmp, weights_pt, monkeypatch, capsys):
    monkeypatch.setenv("TRAINENGINE_REGISTRY", str(in_tmp / "env" / "reg.db"))
    assert main(["registry", "register", "m", "1.0.0", "--checkpoint", str(weights_pt)]) == 0
    assert (in_tmp / "env" / "reg-artifacts" / "m" / "1.0.0" / "weights.pt").is_file()
    assert not (in_tmp / "models.db").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["register", "../x", "1.0.0", "--checkpoint", "w.pt"], "invalid model name '../x'"),
        (["register", "m", "v1", "--checkpoint", "w.pt"], "invalid version 'v1'"),
        (["register", "m", "1.0.0"], "give exactly one of --checkpoint PATH or --bundle PATH"),
        (["register", "m", "1.0.0", "--checkpoint", "w.pt", "--metric", "loss"], "--metric 'loss': write NAME=NUMBER"),
        (
            ["register", "m", "1.0.0", "--checkpoint", "w.pt", "--metric", "loss=nan"],
            "metric 'loss' must be a finite number",
        ),
        (["register", "m", "1.0.0", "--checkpoint", "missing.pt"], "does not exist"),
        (["promote", "m:1.0.0", "production", "--gate", "loss<<1"], "--gate 'loss<<1'"),
        (["show", "nope:1.0.0"], "no model named 'nope'"),
        (["show", "m:1.0"], "invalid version '1.0'"),
        (["rollback", "m", "production"], "nothing to roll back to"),
        (["history", "zzz"], "no model named 'zzz'"),
    ],
)
def test_user_errors_exit_2_with_one_line(in_tmp, weights_pt, capsys, args, message):
    (in_tmp / "w.pt").write_bytes(weights_pt.read_bytes())
    assert main(["registry", "register", "m", "0.1.0", "--checkpoint", "w.pt"]) == 0
    assert main(["registry", "promote", "m:0.1.0", "production"]) == 0
    capsys.readouterr()
    assert main(["registry", *args]) == 2
    line = _err_line(capsys)
    assert line.startswith("error: ") and message in line, line


def test_register_twice_is_refused(in_tmp, weights_pt, capsys):
    assert main(["registry", "register", "m", "1.0.0", "--checkpoint", str(weights_pt)]) == 0
    assert main(["registry", "register", "m", "1.0.0", "--checkpoint", str(weights_pt)]) == 2
    assert "m:1.0.0 is already registered" in _err_line(capsys)
