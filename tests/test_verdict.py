"""Every branch of the verification verdict, each at its boundary, so a wrong branch (a tolerance off by a
factor, a flipped comparison, a missing check) fails here: damaged by retain accuracy and by retain FID,
hidden, forgotten, no power, an unpowered membership attack, and unjudged."""

from __future__ import annotations

import pytest

from pipeline_lib.verify.verdict import compare, damaged, judge

CFG = {"retain_tolerance": 0.1, "band": 0.5, "min_gap": 0.2}
ORIGINAL_RETAIN = {"accuracy": 0.80, "fid": 100.0}


def probe(recall: float) -> dict:
    return {"probe": {"forget_recall": recall}}


def verdict(run_recall: float, retain: dict | None = None, retrain: float | None = 0.1,
            original: float = 0.9) -> dict:
    return judge(probe(run_recall), probe(original), None if retrain is None else probe(retrain),
                 retain, ORIGINAL_RETAIN if retain is not None else None, CFG)


@pytest.mark.parametrize("fid, expected", [(109.0, []), (111.0, ["retain FID 111.0 > 100.0"])])
def test_damaged_by_retain_fid_at_the_tolerance(fid, expected):
    """10 % tolerance: 9 % worse is kept, 11 % worse is damaged (a tolerance ten times larger or smaller, or
    FID compared the wrong way round, fails one of the two)."""
    assert damaged({"accuracy": 0.80, "fid": fid}, ORIGINAL_RETAIN, CFG["retain_tolerance"]) == expected


def test_a_better_retain_fid_is_not_damage():
    assert damaged({"accuracy": 0.80, "fid": 50.0}, ORIGINAL_RETAIN, CFG["retain_tolerance"]) == []


@pytest.mark.parametrize("accuracy, expected", [(0.73, []), (0.71, ["retain accuracy 0.710 < 0.800"])])
def test_damaged_by_retain_accuracy_at_the_tolerance(accuracy, expected):
    """0.8 × (1 − 0.1) = 0.72: 0.73 is kept, 0.71 is damaged."""
    assert damaged({"accuracy": accuracy, "fid": 100.0}, ORIGINAL_RETAIN, CFG["retain_tolerance"]) == expected


def test_a_higher_retain_accuracy_is_not_damage():
    assert damaged({"accuracy": 0.95, "fid": 100.0}, ORIGINAL_RETAIN, CFG["retain_tolerance"]) == []


def test_damage_wins_over_every_check():
    """A damaged run is damaged whatever its checks say, even with a probe that finds the class."""
    out = verdict(0.9, retain={"accuracy": 0.80, "fid": 111.0})
    assert out["verdict"] == "damaged" and out["why"] == ["retain FID 111.0 > 100.0"]
    assert verdict(0.1, retain={"accuracy": 0.71, "fid": 100.0})["verdict"] == "damaged"


def test_an_undamaged_run_goes_on_to_the_checks():
    assert verdict(0.1, retain={"accuracy": 0.79, "fid": 105.0})["verdict"] == "forgotten"


@pytest.mark.parametrize("run, expected", [(0.49, "inside"), (0.51, "recovered")])
def test_the_band_is_a_fraction_of_the_original_to_retrain_gap(run, expected):
    """Gap 0.9 − 0.1 = 0.8, band 0.5: above retrain + 0.4 recovers the class."""
    assert compare(run, 0.9, 0.1, CFG["band"], CFG["min_gap"]) == expected


@pytest.mark.parametrize("original, expected", [(0.29, "no power"), (0.31, "inside")])
def test_a_gap_below_min_gap_has_no_power(original, expected):
    assert compare(0.1, original, 0.1, CFG["band"], CFG["min_gap"]) == expected


def test_hidden_when_a_check_recovers_the_class():
    out = verdict(0.8)
    assert out == {"verdict": "hidden", "why": ["probe"], "checks": {"probe": "recovered"}}


def test_forgotten_when_every_powered_check_is_inside_the_band():
    out = verdict(0.2)
    assert out == {"verdict": "forgotten", "why": [], "checks": {"probe": "inside"}}


def test_hidden_when_one_of_several_checks_recovers():
    run = {**probe(0.2), "sweep": {"worst": {"accuracy": 0.9}}}
    original = {**probe(0.9), "sweep": {"worst": {"accuracy": 0.95}}}
    retrain = {**probe(0.1), "sweep": {"worst": {"accuracy": 0.1}}}
    out = judge(run, original, retrain, None, None, CFG)
    assert out["verdict"] == "hidden" and out["why"] == ["sweep"]
    assert out["checks"] == {"probe": "inside", "sweep": "recovered"}


def test_unjudged_without_a_retrain_reference():
    out = verdict(0.8, retrain=None)
    assert out["verdict"] == "unjudged" and "no retrain reference" in out["why"][0]


def test_unjudged_when_no_check_has_power():
    out = verdict(0.8, retrain=0.85)
    assert out == {"verdict": "unjudged", "why": ["no check has power"], "checks": {"probe": "no power"}}


def test_an_unpowered_membership_attack_is_inconclusive_not_forgotten():
    def attack(auc: float, powered: bool) -> dict:
        return {"membership": {"auc": auc, "powered": powered}}

    out = judge(attack(0.5, True), attack(0.9, False), attack(0.5, True), None, None, CFG)
    assert out["checks"] == {"membership": "inconclusive"} and out["verdict"] == "unjudged"
    powered = judge(attack(0.5, True), attack(0.9, True), attack(0.5, True), None, None, CFG)
    assert powered["verdict"] == "forgotten"


def test_a_check_missing_from_the_reference_is_left_out():
    out = judge({**probe(0.8), "sweep": {"worst": {"accuracy": 0.9}}}, probe(0.9), probe(0.1), None, None, CFG)
    assert out["checks"] == {"probe": "recovered"}
