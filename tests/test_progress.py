"""Progress in logs: periodic plain lines, no carriage returns, whether a stage runs under an engine or not."""

from __future__ import annotations

import subprocess
import sys

from pipeline_lib.runtime.progress import LogProgress


def test_a_stage_log_holds_plain_progress_lines_without_carriage_returns(tmp_path):
    log = tmp_path / "stage.log"
    code = (
        "import time\n"
        "from pipeline_lib.runtime.devices import setup_logging, progress\n"
        f"setup_logging({str(log)!r})\n"
        "import pipeline_lib.runtime.progress as p\n"
        "p.INTERVAL = 0.05\n"
        "bar = progress(total=20, desc='train', unit='step', interval=0.05)\n"
        "for i in range(20):\n"
        "    time.sleep(0.01)\n"
        "    bar.update(1)\n"
        "    bar.set_postfix(loss=f'{1 / (i + 1):.3f}', refresh=False)\n"
        "bar.close()\n"
        "for _ in progress(list(range(5)), desc='generate'):\n"
        "    pass\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, stdin=subprocess.DEVNULL,
                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    text = log.read_text()
    assert "\r" not in text
    lines = [line for line in text.splitlines() if "train:" in line]
    assert 2 <= len(lines) <= 10, text  # periodic, not one per step
    assert "train: 20/20 step" in lines[-1] and "loss=0.050" in lines[-1]
    assert "generate: 5/5 it" in text


def test_progress_counts_an_iterable_and_closes_once():
    bar = LogProgress(range(3), desc="x", interval=1e9)
    assert list(bar) == [0, 1, 2] and bar.n == 3 and bar.closed
    bar.close()  # a second close (the trainer closes explicitly) writes nothing more
    assert bar.n == 3
