"""``recops data``: scripts read JSON from stdout; progress bars go to the terminal only.

The console script runs on a pseudo-terminal here, because what matters is stderr being
a TTY.
"""

from __future__ import annotations

import json
import os
import pty
import subprocess
import sys
from pathlib import Path

RECOPS = Path(sys.executable).parent / "recops"
# What rich draws for a bar; none of it may reach stdout.
BAR_GLYPHS = ("━", "\x1b[?25l")


def _run_on_tty(args: list[str], home: Path) -> tuple[int, str, str]:
    """Run the console script with stderr on a pseudo-terminal and stdout on a pipe.

    Returns:
        ``(exit code, stdout, what the terminal showed)``.
    """
    leader, follower = pty.openpty()
    env = {**os.environ, "RECOPS_HOME": str(home), "TERM": "xterm", "COLUMNS": "120"}
    proc = subprocess.Popen(
        [str(RECOPS), *args], stdout=subprocess.PIPE, stderr=follower, env=env, text=True
    )
    os.close(follower)
    shown = b""
    while True:
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # EIO: the child closed the terminal
            break
        if not chunk:
            break
        shown += chunk
    stdout = proc.stdout.read() if proc.stdout else ""
    code = proc.wait(timeout=300)
    os.close(leader)
    return code, stdout, shown.decode(errors="replace")


def test_data_synth_json_prints_only_json_even_on_a_terminal(synth_home: Path) -> None:
    code, stdout, shown = _run_on_tty(["data", "synth", "--rows", "500", "--json"], synth_home)

    assert code == 0, shown
    result = json.loads(stdout)
    assert result["n_interactions"] == 500
    assert result["n_partitions"] == len(
        list(Path(result["interactions_dir"]).glob("date=*"))
    ) + len(result["staged_dates"])
    assert not any(glyph in shown for glyph in BAR_GLYPHS), shown


def test_progress_bars_go_to_the_terminal_never_to_stdout(synth_home: Path) -> None:
    code, stdout, shown = _run_on_tty(["data", "synth", "--rows", "500"], synth_home)

    assert code == 0, shown
    assert "validating the history" in shown and "━" in shown
    assert json.loads(stdout)["n_interactions"] == 500
    assert not any(glyph in stdout for glyph in BAR_GLYPHS)
