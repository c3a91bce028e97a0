"""`record` keeps the team's numbers from being replaced silently: the run's metrics files name the numerics
that computed them (`runtime.kernels.fingerprint`), and numbers from other numerics than the committed
metrics/machine.json are refused unless accepted. Hand-written metrics files; the real fingerprint."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from pipeline_lib.engines.sharing import OtherMachine, check_machine
from pipeline_lib.runtime.kernels import fingerprint

HERE = fingerprint()


def metrics(root: Path, run: str, machine: dict | None) -> None:
    path = root / "results" / "fm" / "metrics" / run / "center.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"forget": {"fid": 1.0}, **({"machine": machine} if machine else {})}))


def other(**numerics) -> dict:
    changed = copy.deepcopy(HERE)
    changed["numerics"].update(numerics)
    return changed


def test_the_first_record_commits_this_machine(tmp_path):
    metrics(tmp_path, "mae/original/base", HERE)
    assert check_machine(False, tmp_path / "machine.json", tmp_path / "results") == HERE


def test_the_same_numerics_on_another_cpu_are_accepted(tmp_path):
    """Pinned kernels: another CPU model with the same numerics computes the same bytes."""
    (tmp_path / "machine.json").write_text(json.dumps({**HERE, "cpu": "Intel Xeon", "isa": ["avx2", "fma"]}))
    metrics(tmp_path, "mae/original/base", HERE)
    assert check_machine(False, tmp_path / "machine.json", tmp_path / "results") == HERE


@pytest.mark.parametrize("change", [{"threads": 8}, {"mode": "native", "isa": ["avx512f"]}, {"torch": "2.15.0"}])
def test_other_numerics_are_refused_unless_accepted(tmp_path, change):
    (tmp_path / "machine.json").write_text(json.dumps(HERE))
    metrics(tmp_path, "mae/original/base", other(**change))
    with pytest.raises(OtherMachine, match=f"{next(iter(change))}: .* here, .* committed.*--accept-machine"):
        check_machine(False, tmp_path / "machine.json", tmp_path / "results")
    assert check_machine(True, tmp_path / "machine.json", tmp_path / "results")["numerics"] != HERE["numerics"]


def test_a_run_mixing_two_machines_is_refused(tmp_path):
    metrics(tmp_path, "mae/original/base", HERE)
    metrics(tmp_path, "mae/l2n/a", other(threads=8))
    with pytest.raises(OtherMachine, match="2 different numerics"):
        check_machine(False, tmp_path / "machine.json", tmp_path / "results")


def test_no_metrics_nothing_to_check(tmp_path):
    metrics(tmp_path, "mae/original/base", None)
    assert check_machine(False, tmp_path / "machine.json", tmp_path / "results") is None
