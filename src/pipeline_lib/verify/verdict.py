"""The verdict per run: forgotten, hidden or damaged, against the retrain reference and the original.

Each check gives one "class signal" (higher = more of the class is there): the probe's forget recall, the
sweep's worst-case forget accuracy, minus the relearn time as a fraction of the step cap (per K), the
membership AUC. A check recovers the class in a run when the run's signal is above the retrain model's by
more than `band` of the original-to-retrain gap; a check whose gap is below `min_gap` has no power and says
nothing (membership also needs a powered attack on the original). A run is

- damaged  when its retain metrics leave the original's band (accuracy below, or FID above, the original's
  by more than `retain_tolerance`, relative),
- hidden   when some check recovers the class where retrain does not,
- forgotten when every check with power puts it inside the retrain band,
- unjudged when there is no retrain reference or no check has power.
"""

from __future__ import annotations

from typing import Any

from .relearn import effective_steps


def signals(check: str, result: dict[str, Any]) -> dict[str, float]:
    """name -> class signal of one check's result file."""
    if check == "probe":
        return {"probe": result["forget_recall"]}
    if check == "sweep":
        return {"sweep": result["worst"]["accuracy"]}
    if check == "relearn":
        return {f"relearn K={r['K']}": -effective_steps(r) / r["max_steps"] for r in result["runs"]}
    if check == "membership":
        return {"membership": result["auc"]}
    raise ValueError(f"unknown check '{check}'")


def compare(run: float, original: float, retrain: float, band: float, min_gap: float) -> str:
    """'recovered', 'inside' (the retrain band) or 'no power' for one signal."""
    gap = original - retrain
    if gap < min_gap:
        return "no power"
    return "recovered" if run - retrain > band * gap else "inside"


def damaged(run: dict[str, float], original: dict[str, float], tolerance: float) -> list[str]:
    """Retain metrics (from the metrics stage: accuracy, fid) outside the original's band."""
    out = []
    if run.get("accuracy") is not None and run["accuracy"] < original["accuracy"] * (1 - tolerance):
        out.append(f"retain accuracy {run['accuracy']:.3f} < {original['accuracy']:.3f}")
    if run.get("fid") is not None and run["fid"] > original["fid"] * (1 + tolerance):
        out.append(f"retain FID {run['fid']:.1f} > {original['fid']:.1f}")
    return out


def judge(run: dict[str, dict], original: dict[str, dict], retrain: dict[str, dict] | None,
          retain_run: dict[str, float] | None, retain_original: dict[str, float] | None,
          cfg: dict[str, Any]) -> dict[str, Any]:
    """`run`, `original`, `retrain`: check -> result file content. Returns verdict, reasons and each signal's
    comparison."""
    reasons = damaged(retain_run, retain_original, cfg["retain_tolerance"]) if retain_run and retain_original else []
    if reasons:
        return {"verdict": "damaged", "why": reasons, "checks": {}}
    if retrain is None:
        return {"verdict": "unjudged", "why": ["no retrain reference (add methods.retrain)"], "checks": {}}
    outcome: dict[str, str] = {}
    for check, result in run.items():
        if check not in original or check not in retrain:
            continue
        s_run, s_orig, s_ret = signals(check, result), signals(check, original[check]), signals(check, retrain[check])
        for name, value in s_run.items():
            if name not in s_orig or name not in s_ret:
                continue
            if check == "membership" and not original[check]["powered"]:
                outcome[name] = "inconclusive"
                continue
            outcome[name] = compare(value, s_orig[name], s_ret[name], cfg["band"], cfg["min_gap"])
    recovered = [n for n, o in outcome.items() if o == "recovered"]
    if recovered:
        return {"verdict": "hidden", "why": recovered, "checks": outcome}
    if any(o == "inside" for o in outcome.values()):
        return {"verdict": "forgotten", "why": [], "checks": outcome}
    return {"verdict": "unjudged", "why": ["no check has power"], "checks": outcome}
