"""``python -m trainkit.models``: the zoo table."""

from __future__ import annotations

import pytest

from trainkit.models import available_models
from trainkit.models.__main__ import main


def test_table_lists_every_model(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["--no-params"]) == 0
    out = capsys.readouterr().out
    for name in available_models():
        assert name in out
    assert "caffe" in out and "clip" in out and "yes" in out and "no" in out


@pytest.mark.slow
def test_table_counts_parameters(capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "160")
    assert main(["alexnet", "inception_v1", "--describe"]) == 0
    out = capsys.readouterr().out
    assert "62,378,344" in out and "13,378,280" in out
    assert "227x227" in out and "67x67" in out and "31x31" in out


def test_unknown_model(capsys):
    assert main(["resnet9000"]) == 2
    assert "unknown model 'resnet9000'" in capsys.readouterr().out
