"""The documents' numbers, written from the runs: a number a page shows is generated, never typed.

`python -m pipeline_lib docs` writes
- `docs/results.md`: every committed summary (`metrics/<dataset>/<task>.json`) as a table, with the md5 that
  `dvc.lock` records for it, so a reader can tell which run the numbers are;
- `docs/configuration.md`: every params key with its type, the default experiment's value and the schema's
  description;
- the README's generated blocks (between `<!-- generated: results-table <dataset> <task> -->` and
  `<!-- /generated -->`): the headline table of one committed summary; and (`seed-spread` blocks) the
  standard deviation of each of its numbers over pre-training seeds, from
  `metrics/<dataset>/pretrain-seeds/<task>.json` (`python -m pipeline_lib pretrain-spread`).

`tests/test_docs.py` regenerates all three in memory and fails when a committed page differs.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

from ..evaluation import forgetting
from ..params.grid import variant_name

#: the headline columns: (summary score, table label)
HEADLINE = (("fid", "FID"), ("is", "IS"), ("cosine", "Cosine"), ("accuracy", "Acc"))
#: the order methods are listed in (others follow in the summary's order)
METHOD_ORDER = ("original", "retrain")
BLOCK = re.compile(r"(<!-- generated: (results-table|seed-spread) (\S+) (\S+) -->\n)(.*?)(<!-- /generated -->)", re.S)


def _runs(summary: dict[str, Any], models: list[str] = ()) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(model, method, variant key, run) of one forget set's summary: originals and retrain first, then the
    methods in the summary's order; within a method, `models`' order (params'), then the rest."""
    runs = [(model, method, key, run) for model, methods in summary.items()
            for method, by_key in methods.items() for key, run in by_key.items()]
    methods = list(dict.fromkeys([*METHOD_ORDER, *(r[1] for r in runs)]))
    families = list(dict.fromkeys([*models, *(r[0] for r in runs)]))
    return sorted(runs, key=lambda r: (methods.index(r[1]), families.index(r[0])))  # stable within a model


def _variant(method: str, key: str, run: dict[str, Any]) -> str:
    """The run's variant name, from its named axes (`key`) and its numeric axes (in the run's numbers)."""
    if method == "original" or key == "base" and not any(k in run for k in ("alpha", "sigma", "gamma", "eps")):
        return ""
    point: dict[str, Any] = {k: run[k] for k in ("alpha", "sigma", "gamma", "eps") if k in run}
    for part in ([] if key == "base" else key.split("~")[0].split("_")):
        axis, value = part.split("-", 1)
        point[axis] = value
    return variant_name(point)


def headline_table(summary: dict[str, Any], models: list[str] = ()) -> pd.DataFrame:
    """One row per run: R and F of the headline scores and the forgetting flag (as the report's table)."""
    rows = []
    for model, method, key, run in _runs(summary, models):
        row = {"set": "", "model": model, "method": method, "variant": _variant(method, key, run)}
        for score, label in HEADLINE:
            row[f"{label} R"] = run.get("R", {}).get(score, float("nan"))
            row[f"{label} F"] = run.get("F", {}).get(score, float("nan"))
        rows.append(row)
    df = pd.DataFrame(rows)
    df[forgetting.COLUMN] = forgetting.flags(df)
    return df.drop(columns="set")


def _seed_summary(numbers: dict[str, Any], i: int) -> dict[str, Any]:
    """The summary of the i-th seed, rebuilt from a spread file's per-number values."""
    if "values" in numbers:
        return numbers["values"][i]
    return {k: _seed_summary(v, i) for k, v in numbers.items()}


def spread_table(spread: dict[str, Any], models: list[str] = ()) -> tuple[pd.DataFrame, list[int]]:
    """The headline table's rows with each number's sample standard deviation over the seeds, and in how many
    seeds the run forgets (the report's flag, judged per seed against that seed's original)."""
    seeds = spread["seeds"]
    tables = [headline_table(_seed_summary(spread["numbers"], i), models) for i in range(len(seeds))]
    keys = ["model", "method", "variant"]
    out = tables[0][keys].copy()
    numeric = [c for c in tables[0].columns if c not in (*keys, forgetting.COLUMN)]
    stacked = pd.concat([t[numeric] for t in tables], keys=range(len(tables)))
    out[[f"sd {c}" for c in numeric]] = stacked.groupby(level=1).std(ddof=1).to_numpy()
    yes = sum(t[forgetting.COLUMN].str.startswith("yes").to_numpy().astype(int) for t in tables)
    out[forgetting.COLUMN] = [f"{n}/{len(tables)}" if m != "original" else "" for n, m in zip(yes, out["method"])]
    return out, seeds


def markdown(df: pd.DataFrame) -> str:
    return df.to_markdown(index=False, floatfmt=".3f") + "\n"


def _lock_md5(lock: dict[str, Any], path: str) -> str | None:
    for stage in lock.get("stages", {}).values():
        for out in stage.get("outs", []):
            if out.get("path") == path:
                return out.get("md5")
    return None


def _summaries(root: Path) -> list[tuple[str, str, Path]]:
    return [(p.parent.name, p.stem, p) for p in sorted((root / "metrics").glob("*/*.json"))]


def _is_set_keyed(summary: dict[str, Any]) -> bool:
    """A summary of several named forget sets: set name → model → ... (a model's entry maps methods to runs)."""
    first = next(iter(summary.values()), {})
    return not any(isinstance(run, dict) and "R" in run
                   for methods in [first] for by_key in methods.values() for run in by_key.values())


def _models(root: Path) -> list[str]:
    """The default experiment's families, in params.yaml's order (the tables list them so)."""
    path = root / "params.yaml"
    return list(yaml.safe_load(path.read_text()).get("models", [])) if path.is_file() else []


def results_page(root: Path) -> str:
    models = _models(root)
    lock_path = root / "dvc.lock"
    lock = yaml.safe_load(lock_path.read_text()) if lock_path.is_file() else {}
    out = ["# Results", "",
           "Generated by `python -m pipeline_lib docs` from the committed summaries (`metrics/<dataset>/<task>.json`,",
           "written by the pipeline's `summary` stage) and `dvc.lock`; do not edit by hand. R = retain set,",
           "F = forget set; FID, IS and the cosine use the pipeline's extractor on Fashion-MNIST, Acc is its",
           "accuracy on the reconstructions; `forgets` is the report's flag (forget FID above and forget accuracy",
           "below the original's). The report (`results/<dataset>/report/`) holds every other table and figure.", ""]
    for ds, task, path in _summaries(root):
        summary = json.loads(path.read_text())
        rel = str(path.relative_to(root))
        md5 = _lock_md5(lock, rel)
        out += [f"## {ds}, task `{task}`", "",
                f"`{rel}`" + (f", md5 `{md5}` in `dvc.lock`." if md5 else " (not in `dvc.lock`)."), ""]
        sets = summary.items() if _is_set_keyed(summary) else [(None, summary)]
        for name, one in sets:
            if name is not None:
                out += [f"### forget set `{name}`", ""]
            out += [markdown(headline_table(one, models)).rstrip("\n"), ""]
            times = [(m, meth, _variant(meth, k, r), r["train_s"]) for m, meth, k, r in _runs(one, models) if "train_s" in r]
            if times:
                out += ["Training wall time of each model (s): " + "; ".join(
                    f"{m} {meth}{' ' + v if v else ''} {s:.0f}" for m, meth, v, s in times) + ".", ""]
    return "\n".join(out).rstrip("\n") + "\n"


def _schema_rows(node: dict[str, Any], defs: dict[str, Any], prefix: str, value: Any,
                 rows: list[tuple[str, str, str, str]], depth: int = 0) -> None:
    if "$ref" in node:
        node = {**defs[node["$ref"].rsplit("/", 1)[1]], **{k: v for k, v in node.items() if k != "$ref"}}
    kind = node.get("type", "enum" if "enum" in node else "")
    kind = " or ".join(kind) if isinstance(kind, list) else kind
    if "enum" in node:
        kind = " \\| ".join(f"`{v}`" for v in node["enum"])
    if prefix:
        shown = "" if value is _ABSENT else f"`{json.dumps(value)}`"
        rows.append((prefix, kind, shown, node.get("description", "").replace("|", "\\|")))
    props = node.get("properties", {})
    if depth < 3:
        for key, child in props.items():
            child_value = value.get(key, _ABSENT) if isinstance(value, dict) else _ABSENT
            _schema_rows(child, defs, f"{prefix}.{key}" if prefix else key, child_value, rows, depth + 1)


_ABSENT = object()


def configuration_page(root: Path) -> str:
    schema = yaml.safe_load((root / "workflow/schemas/params.schema.yaml").read_text())
    params = yaml.safe_load((root / "params.yaml").read_text())
    rows: list[tuple[str, str, str, str]] = []
    _schema_rows(schema, schema.get("$defs", {}), "", params, rows)
    out = ["# Configuration: every params key", "",
           "Generated by `python -m pipeline_lib docs` from `workflow/schemas/params.schema.yaml` (types, descriptions)",
           "and `params.yaml` (the default experiment's values; empty where the default leaves a key unset); do not",
           "edit by hand. Keys are listed three levels deep; the schema holds the rest. A bad key fails before any",
           "job starts, naming the key.", "",
           "| key | type | default experiment | meaning |", "| --- | --- | --- | --- |"]
    out += [f"| `{k}` | {t} | {v} | {d} |" for k, t, v, d in rows]
    return "\n".join(out) + "\n"


def readme_blocks(root: Path, text: str) -> str:
    """The README with each generated block rewritten from its committed summary."""

    def fill(m: re.Match) -> str:
        kind, ds, task = m.group(2), m.group(3), m.group(4)
        if kind == "seed-spread":
            spread = json.loads((root / "metrics" / ds / "pretrain-seeds" / f"{task}.json").read_text())
            table, seeds = spread_table(spread, _models(root))
            return (m.group(1) + markdown(table) + f"\nSeeds {', '.join(map(str, seeds))}; "
                    f"`{spread['command']}`.\n" + m.group(6))
        summary = json.loads((root / "metrics" / ds / f"{task}.json").read_text())
        if _is_set_keyed(summary):
            summary = next(iter(summary.values()))
        return m.group(1) + markdown(headline_table(summary, _models(root))) + m.group(6)

    return BLOCK.sub(fill, text)


def pages(root: str | Path = ".") -> dict[str, str]:
    """Path (relative to `root`) → the content it should have."""
    root = Path(root)
    out = {"docs/results.md": results_page(root), "docs/configuration.md": configuration_page(root)}
    readme = root / "README.md"
    if readme.is_file():
        out["README.md"] = readme_blocks(root, readme.read_text())
    return out


def write(root: str | Path = ".") -> list[str]:
    """Write every generated page whose content changed; the paths written."""
    from ..runtime.atomic import write_text

    written = []
    for rel, content in pages(root).items():
        path = Path(root) / rel
        if not path.is_file() or path.read_text() != content:
            write_text(path, content)
            written.append(rel)
    return written
