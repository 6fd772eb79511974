"""Weights files are read without running code from them; bad files fail with errors naming them."""
from __future__ import annotations

import os
import pickle
from collections import OrderedDict

import numpy as np
import pytest
import torch

from unikd.core.checks import COMMON_VALUE_RULES, ValueRule, check_config_values
from unikd.core.files import load_torch_file, load_array_pickle


class _Planted:
    """Unpickling this object creates the marker file: the payload a hostile checkpoint would carry."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_torch_file_round_trip_of_weights_and_plain_state(tmp_path):
    state = {"model": OrderedDict(w=torch.randn(3, 2)), "epoch": 4, "rng": torch.get_rng_state(), "cfg": "A: 1"}
    torch.save(state, tmp_path / "ok.pth")
    loaded = load_torch_file(tmp_path / "ok.pth")
    assert torch.equal(loaded["model"]["w"], state["model"]["w"]) and loaded["epoch"] == 4


def test_hostile_torch_file_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "payload": _Planted(str(marker))}, tmp_path / "evil.pth")
    with pytest.raises(ValueError, match=r"refused to load .*evil\.pth.*GLOBAL .*open") as info:
        load_torch_file(tmp_path / "evil.pth")
    assert not marker.exists()
    assert "weights_only" not in str(info.value)  # never advise the unsafe load


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", "truncate"])
def test_empty_truncated_or_foreign_torch_file_names_the_path(tmp_path, content):
    path = tmp_path / "bad.pth"
    if content == "truncate":
        torch.save({"w": torch.randn(100, 100)}, path)
        path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    else:
        path.write_bytes(content)
    with pytest.raises(ValueError, match="bad.pth"):
        load_torch_file(path, what="a run's last.pth")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        load_torch_file(tmp_path / "missing.pth")
    with pytest.raises(FileNotFoundError, match="missing.pkl"):
        load_array_pickle(tmp_path / "missing.pkl")


@pytest.mark.parametrize("protocol", [2, pickle.HIGHEST_PROTOCOL])
def test_weights_pickle_reads_numpy_arrays_in_plain_containers(tmp_path, protocol):
    model = OrderedDict(a=np.arange(6, dtype=np.float32).reshape(2, 3), b=np.float64(2.5))
    with open(tmp_path / "w.pkl", "wb") as f:
        pickle.dump({"model": model, "__author__": "test", "matching_heuristics": True}, f, protocol=protocol)
    loaded = load_array_pickle(tmp_path / "w.pkl")
    assert np.array_equal(loaded["model"]["a"], model["a"]) and loaded["model"]["b"] == 2.5
    assert loaded["__author__"] == "test"


def test_hostile_weights_pickle_is_refused_without_running_its_code(tmp_path):
    marker = tmp_path / "pwned"
    with open(tmp_path / "evil.pkl", "wb") as f:
        pickle.dump({"model": {"w": np.zeros(2)}, "x": _Planted(str(marker))}, f)
    with pytest.raises(ValueError, match=r"refused to load .*evil\.pkl: global .*open is not allowed"):
        load_array_pickle(tmp_path / "evil.pkl")
    assert not marker.exists()


def test_truncated_weights_pickle_names_the_path(tmp_path):
    path = tmp_path / "cut.pkl"
    with open(path, "wb") as f:
        pickle.dump({"model": {"w": np.zeros(1000)}}, f)
    path.write_bytes(path.read_bytes()[:50])
    with pytest.raises(ValueError, match="cut.pkl"):
        load_array_pickle(path)


def test_value_rules_list_every_violation_with_its_key():
    cfg = {"KD": {"TEMPERATURE": 0.0, "KD_WEIGHT": -1.0, "CE_WEIGHT": 0.0},
           "MLKD": {"TEMPERATURES": [4.0, -2.0]}, "SOLVER": {"EPOCHS": 0, "LR": 0.1},
           "MODEL": {"WEIGHTS": "path.pkl"}, "FLAG": {"ENABLED": True}}
    with pytest.raises(ValueError) as info:
        check_config_values(cfg, COMMON_VALUE_RULES)
    message = str(info.value)
    for key in ("KD.TEMPERATURE = 0.0", "KD.KD_WEIGHT = -1.0", "MLKD.TEMPERATURES", "SOLVER.EPOCHS = 0"):
        assert key in message
    assert "CE_WEIGHT" not in message and "MODEL.WEIGHTS" not in message


def test_value_rules_warn_at_a_boundary_value_and_pass_good_values(caplog):
    rules = (ValueRule("SOLVER.LR", 0.0, warn_at=0.0),)
    assert check_config_values({"SOLVER": {"LR": 0.1}}, rules) == []
    assert check_config_values({"SOLVER": {"LR": 0}}, rules) == ["SOLVER.LR = 0: nothing will be learned"]
    with pytest.raises(ValueError, match=r"SOLVER.LR = -0.1 \(must be >= 0\)"):
        check_config_values({"SOLVER": {"LR": -0.1}}, rules)
