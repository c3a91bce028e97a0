"""Report stages: the per-task numeric summaries and every table and figure."""

from __future__ import annotations

import logging

from ..params import paths
from ..runtime.errors import ParamsError

LOG = logging.getLogger(__name__)


def summary(params: dict) -> None:
    """The numeric summary per task (metrics/<dataset>/<task>.json) that DVC diffs between commits."""
    from ..report.summary import write_summaries

    for path in write_summaries(params):
        LOG.info("wrote %s", path)


def aggregate(params: dict, extractor_path: str, reference_dir: list[str], out: str) -> None:
    """Tables, figures, image grids and t-SNE maps of every task (and the cross-validation check), per forget
    set (one reference directory each, in params' order), and their spread over sets and seeds."""
    from ..report.tables import write_report

    roots = paths.set_roots(params)
    if len(reference_dir) != len(roots):
        raise ParamsError(f"aggregate got {len(reference_dir)} reference directories for {len(roots)} forget sets "
                          "(one per set, in the order of params key 'splits.sets')")
    write_report(params, out, extractor_path, dict(zip(roots, reference_dir)))


def docs(params: dict) -> None:
    """The documents' generated pages (docs/results.md, docs/configuration.md, the README's tables) from the
    committed metrics/, dvc.lock, the schema and params.yaml."""
    from ..report import docs as generated

    for path in generated.write("."):
        LOG.info("wrote %s", path)
