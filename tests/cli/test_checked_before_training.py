"""Every option, the run name included, is checked before any training: a bad name must
not throw a finished run away (``--run ""`` used to train, save nothing and exit 0)."""

from __future__ import annotations

import pytest

import attrcore.run as run_module
from attrcore import app as sup
from attrcore.cli.main import main
from attrcore.config import SimulationConfig, TrainConfig
from attrcore.errors import ConfigError
from attrcore.store import RunStore

MOONS = ["--train", "moons", "--n-samples", "80", "--epochs", "2", "--hidden", "8", "--batch-size", "16"]


@pytest.fixture
def no_training(monkeypatch):
    """Make any training attempt fail loudly."""

    def refuse(*args, **kwargs):
        raise AssertionError("training started before the options were checked")

    monkeypatch.setattr(run_module, "train", refuse)


@pytest.mark.parametrize("name", ["", "bad name!", ".hidden", "x" * 101])
def test_cli_refuses_a_bad_run_name_before_training(capsys, no_training, name):
    code = main(["train", *MOONS, "--run", name])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and "invalid run name" in err
    assert RunStore().list_runs() == []


def test_cli_refuses_a_taken_name_before_training(capsys, monkeypatch):
    assert main(["train", *MOONS, "--horizon", "0", "--run", "taken"]) == 0
    capsys.readouterr()

    def refuse(*args, **kwargs):
        raise AssertionError("training started")

    monkeypatch.setattr(run_module, "train", refuse)
    code = main(["train", *MOONS, "--run", "taken"])
    assert code == 2 and "exists" in capsys.readouterr().err


def test_the_app_request_checks_the_name_before_training(no_training):
    request = sup.TrainRequest(
        data=sup.DataChoice("moons", n_samples=60),
        name="no spaces please",
        hidden=(4,),
        train=TrainConfig(epochs=1),
        simulation=SimulationConfig(horizon=0),
    )
    with pytest.raises(ConfigError, match="invalid run name"):
        request.fit_and_save(RunStore())


def test_check_can_save():
    store = RunStore()
    assert store.check_can_save("fine-name_1.2") == "fine-name_1.2"
    with pytest.raises(ConfigError, match="invalid run name"):
        store.check_can_save("")
