"""What `ppo1 train` shows in a real terminal (a pseudo-terminal, so the progress bar is drawn): after
Ctrl-C the "saved" line is the last thing on screen, and a resumed run's bar counts the run's
training time, as TimeElapsed does, not this session's from 00:00."""

from __future__ import annotations

import fcntl
import os
import pty
import re
import select
import signal
import struct
import subprocess
import sys
import termios
import time
from pathlib import Path

import pytest
import torch
from conftest import cli_env, read_progress

CLOCK = re.compile(r"\[(\d+):(\d\d)<")  # the bar's elapsed time, [MM:SS<remaining


def in_terminal(args: list[str], cwd: Path, interrupt_at: int | None = None, timeout: float = 300) -> str:
    """Run `ppo1 ARGS` on a pseudo-terminal and return what it drew; with interrupt_at, press Ctrl-C
    (SIGINT) once progress.csv has that many rows."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 rows, 100 columns
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppo1", *args], cwd=cwd, stdin=slave, stdout=slave, stderr=slave, env=cli_env()
    )
    os.close(slave)
    out, deadline = b"", time.monotonic() + timeout
    run_dir = cwd / "ck" / "run"
    while time.monotonic() < deadline:
        if interrupt_at and len(read_progress(run_dir)) >= interrupt_at:
            proc.send_signal(signal.SIGINT)
            interrupt_at = None
        if select.select([master], [], [], 0.05)[0]:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the child closed the terminal
                break
            if not chunk:
                break
            out += chunk
    os.close(master)
    assert proc.wait(timeout=60) == 0, out.decode(errors="replace")[-2000:]
    return out.decode(errors="replace")


@pytest.mark.slow
def test_ctrl_c_ends_with_the_saved_line_and_a_resume_keeps_the_clock(tmp_path, cli):
    args = ["train", *cli.TINY, "--checkpoint_dir", "ck", "--model_name", "run", "--env_steps", "100000"]
    first = in_terminal(args, tmp_path, interrupt_at=40)
    assert "step/s" in first  # the bar was drawn
    saved = first.rindex("SIGINT: saved")
    after = first[saved:].split("\n", 1)[1] if "\n" in first[saved:] else ""
    assert after.strip() == "", f"drawn after the saved line: {after!r}"

    trained = torch.load(tmp_path / "ck" / "run" / "checkpoint.pt", weights_only=True)["counters"]["elapsed"]
    assert trained >= 2, "the first session should train for a few seconds"
    second = in_terminal(args, tmp_path, interrupt_at=len(read_progress(tmp_path / "ck" / "run")) + 3)
    resumed = second[second.index("resuming") :]
    clocks = [int(m) * 60 + int(s) for m, s in CLOCK.findall(resumed)]
    assert clocks and clocks[0] >= int(trained), (trained, resumed[:500])


def test_the_bar_shows_this_sessions_rate_and_the_runs_clock():
    """A resumed run (500 s trained before, from step 100) that made 200 steps in 10 s of this
    session: 20 steps/s, 35 s left for the 700 steps to go, and the clock at 08:30, at every refresh
    including the last one, when the run stops."""
    import io

    from ppo1.logger import RunBar

    out = io.StringIO()
    bar = RunBar(total=1000, initial=100, trained=500.0, unit="step", file=out, mininterval=0, ascii=True)
    bar._time = lambda: 1010.0  # tqdm's own clock, held still: a loaded machine's real one moved on
    bar.start_t = bar.last_print_t = 1000.0
    bar.update(200)
    values = bar.format_dict
    assert values["rate"] == 20.0
    assert values["elapsed"] == 510.0
    bar.close()
    last = out.getvalue().split("\r")[-1]
    assert "[08:30<00:35, 20.00step/s]" in last, last
