"""Progress: a live bar on a terminal, periodic plain lines everywhere else.

Stages run under Snakemake, DVC and SLURM with stderr copied into a log file; a tqdm bar there writes a
carriage-return update every few seconds, which turns log files into one unreadable line. So the bar is
drawn only on a terminal (and never into the log file), and a log line with the count, rate and latest
postfix is written every `interval` seconds to the log (and terminal) instead.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Iterable

LOG = logging.getLogger("pipeline_lib.progress")
#: seconds between two progress lines in a log
INTERVAL = 30.0


class LogProgress:
    """The part of tqdm's interface the stages use (iterate, update, set_postfix, close), as log lines."""

    def __init__(self, iterable: Iterable | None = None, total: int | None = None, desc: str = "",
                 unit: str = "it", interval: float = INTERVAL, bar: Any = None, **_: Any):
        self.iterable, self.desc, self.unit, self.interval, self.bar = iterable, desc or "progress", unit, interval, bar
        if total is None and iterable is not None and hasattr(iterable, "__len__"):
            total = len(iterable)
        self.total, self.n, self.postfix, self.closed = total, 0, "", False
        self.start = self.last = time.monotonic()

    def __iter__(self):
        for item in self.iterable:
            yield item
            self.update(1)
        self.close()

    def __len__(self) -> int:
        return self.total or 0

    def update(self, n: int = 1) -> None:
        self.n += n
        if self.bar is not None:
            self.bar.update(n)
        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            self._line()

    def set_postfix(self, refresh: bool = True, **values: Any) -> None:
        self.postfix = ", ".join(f"{k}={v}" for k, v in values.items())
        if self.bar is not None:
            self.bar.set_postfix(refresh=refresh, **values)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.bar is not None:
            self.bar.close()
        if self.n:
            self._line()

    def _line(self) -> None:
        elapsed = max(time.monotonic() - self.start, 1e-9)
        of = f"/{self.total}" if self.total else ""
        extra = f" ({self.postfix})" if self.postfix else ""
        LOG.info("%s: %d%s %s, %.2f %s/s, %.0f s%s", self.desc, self.n, of, self.unit, self.n / elapsed, self.unit,
                 elapsed, extra)


def progress(iterable: Iterable | None = None, **kwargs: Any) -> LogProgress:
    """Periodic log lines; plus a tqdm bar on the real terminal when stderr is one (not in the log file)."""
    bar = None
    terminal = sys.__stderr__
    if terminal is not None and terminal.isatty():
        from tqdm.auto import tqdm

        bar = tqdm(total=kwargs.get("total", len(iterable) if hasattr(iterable, "__len__") else None),
                   desc=kwargs.get("desc"), unit=kwargs.get("unit", "it"), file=terminal, dynamic_ncols=True,
                   mininterval=1.0, leave=False)
    return LogProgress(iterable, bar=bar, **kwargs)
