"""runs report: a static HTML page; rendered in headless Chromium, its plots load.

Chromium is a system package (scripts/system-deps.sh installs it; `make test` runs that first): a
missing browser fails the test instead of skipping it, since a skip CI would take is a missing test.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest

from trainengine.cli.main import main

TINY = [
    "--dataset",
    "digits",
    "--output-dir",
    "runs",
    "--set",
    "tracking.progress=off",
    "--max-steps",
    "30",
    "--set",
    "training.eval_interval_steps=10",
    "--set",
    "checkpointing.enabled=true",
    "--set",
    "checkpointing.save_every_n_steps=10",
    "--set",
    "checkpointing.save_every_n_epochs=null",
    "--set",
    "tracking.notes=<script>alert(1)</script>",
]


@pytest.fixture
def report(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["train", *TINY, "--run-name", "rep"]) == 0
    assert main(["runs", "report", "default/rep", "--output", "report.html"]) == 0
    capsys.readouterr()
    return tmp_path / "report.html"


def test_report_has_every_section_and_escapes_run_text(report):
    text = report.read_text()
    for section in ("Results", "Curves", "Evaluations", "Alerts and incidents", "Checkpoints", "Config"):
        assert f"<h2>{section}</h2>" in text
    assert text.count("data:image/png;base64,") >= 3  # train/loss, val/loss, val/accuracy, lr
    assert "ckpt-000000030" in text and "best" in text
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        if found := shutil.which(name):
            return found
    pytest.fail(
        "headless Chromium not found on PATH (chromium, chromium-browser, google-chrome); "
        "run scripts/system-deps.sh as root, or: apt-get install --no-install-recommends chromium",
        pytrace=False,
    )


def test_report_renders_in_headless_chromium_with_loaded_images(report, tmp_path):
    cmd = [
        _chromium(),
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--virtual-time-budget=5000",
        "--dump-dom",
        report.as_uri(),
    ]
    dom = subprocess.run(cmd, capture_output=True, text=True, timeout=120).stdout
    assert 'data-images-ok="yes"' in dom
    assert int(dom.split('data-images="')[1].split('"')[0]) >= 3
