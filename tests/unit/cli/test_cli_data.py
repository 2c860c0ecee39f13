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


def test_synth_out_infer_and_import_with_no_edit(empty_home: Path, tmp_path: Path) -> None:
    from recops.cli.app import app
    from typer.testing import CliRunner

    runner = CliRunner()
    out = tmp_path / "files"
    synth = runner.invoke(
        app, ["data", "synth", "--mode", "shop", "--rows", "300", "--users", "15",
              "--items", "25", "--days", "2", "--out", str(out)],
    )  # fmt: skip
    assert synth.exit_code == 0, synth.output
    shipped = Path(json.loads(synth.stdout)["spec"])
    data = shipped.parent / "shop-synthetic"
    draft = tmp_path / "drafts" / "mine.yaml"

    infer = runner.invoke(
        app, ["data", "infer", "--name", "mine", "--events", str(data / "events.csv"),
              "--users", str(data / "customers.csv"), "--items", str(data / "products.csv"),
              "--out", str(draft), "--json"],
    )  # fmt: skip
    assert infer.exit_code == 0, infer.output
    summary = json.loads(infer.stdout)
    assert summary["user_key"] == "customer" and summary["event_types"][0] == "view"
    assert "files:\n  events: ../files/shop-synthetic/events.csv" in draft.read_text()

    # Both days staged: the import converts and lands without the (slow) history run.
    landed = runner.invoke(
        app, ["data", "import", "--spec", str(draft), "--stage-last-days", "2", "--json"]
    )
    assert landed.exit_code == 0, landed.output
    result = json.loads(landed.stdout)
    assert len(result["staged_dates"]) == 2
    assert (empty_home / "data" / "mine" / "keys" / "users.parquet").is_file()


def test_import_of_files_that_do_not_fit_names_field_and_column(
    empty_home: Path, tmp_path: Path
) -> None:
    from recops.cli.app import app
    from typer.testing import CliRunner

    spec = tmp_path / "shop.yaml"
    spec.write_text(
        "name: shop\nusers: {key: customer, key_type: string}\n"
        "items: {key: sku, key_type: string}\n"
        "events: {user_key: customer, item_key: sku, timestamp: {column: ts, format: iso8601}}\n"
        "files: {events: events.csv}\n"
    )
    (tmp_path / "events.csv").write_text("client,sku,ts\nc-1,SKU-1,2024-01-01T00:00:00Z\n")

    result = CliRunner().invoke(app, ["data", "import", "--spec", str(spec)])

    assert result.exit_code == 1
    assert "spec field 'events.user_key' names column 'customer'" in result.output
    assert "events.csv" in result.output and "hint: docs/datasets.md" in result.output
    assert not (empty_home / "data").exists()
