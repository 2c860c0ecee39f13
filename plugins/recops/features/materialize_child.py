"""The features stage's materialization in a process of its own, beside the joins.

Writing the SQLite online store is Python-bound (Feast issues a statement per entity and
feature), while the point-in-time joins are mostly DuckDB, so the two overlap well in
two processes and badly in two threads (they would share the GIL). The child is a plain
``python -m recops.features.materialize_child`` rather than a ``multiprocessing`` spawn,
which would re-import the caller's ``__main__`` (and run an unguarded script again).

The parent pins its own store's registry (``open_store(..., pinned=True)``): from the
child's start, only the child writes the file registry, and the parent never re-reads it.
A failed or killed child raises ``UnavailableError`` with the end of its output; a retry
redoes it, since materialization records each view's end only once it is written.

A killed task can leave its child running. The child inherits the descriptor of the
``writer_lock`` its parent holds, and a ``flock`` lives as long as any descriptor of it,
so a retry (which takes the lock before it applies the repo) waits for such an orphan
instead of writing the registry beside it.
"""

from __future__ import annotations

import fcntl
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from types import TracebackType

from recops.config import Settings
from recops.errors import UnavailableError

__all__ = ["MaterializeProcess", "writer_lock"]

_TAIL_BYTES = 4000


@contextmanager
def writer_lock(settings: Settings) -> Iterator[int]:
    """Hold the dataset's Feast writer lock; yields its descriptor for ``MaterializeProcess``.

    Waits while another holder, a materializing child of a killed task included, lives.
    """
    path = settings.feast_dir / "writer.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+b") as handle:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        try:
            yield handle.fileno()
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class MaterializeProcess:
    """``recops.features.store.materialize_views(settings, end)`` in a child process.

    Use as a context manager: leaving it waits for the child (a half-finished
    materialization is never abandoned to run on unseen) and removes its folder.

    Args:
        settings: Deployment settings (pickled to the child).
        end: Materialize events up to this time (inclusive).
        lock: The descriptor ``writer_lock`` yielded; the child holds it too.
    """

    def __init__(self, settings: Settings, end: datetime, *, lock: int) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="recops-materialize-"))
        args, self._result = self._dir / "args.pickle", self._dir / "result.json"
        # The pickle is ours, written and read by this module in a private folder.
        args.write_bytes(pickle.dumps((settings, end)))
        self._log = (self._dir / "output.log").open("w+b")
        # The child imports recops from wherever this process did (Airflow puts
        # ``plugins/`` on the path itself).
        path = os.pathsep.join(p for p in sys.path if p)
        self._proc = subprocess.Popen(  # noqa: S603 (our own module, no shell)
            [sys.executable, "-m", __name__, str(args), str(self._result)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": path},
            pass_fds=(lock,),
        )

    def __enter__(self) -> MaterializeProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._proc.wait()
        self._log.close()
        shutil.rmtree(self._dir, ignore_errors=True)

    def result(self) -> dict[str, str]:
        """Wait for the child; each view's end time, as ``materialize`` returns it.

        The child's output (Feast's progress) is copied to this process's stdout.

        Raises:
            UnavailableError: The child failed or was killed.
        """
        code = self._proc.wait()
        self._log.flush()
        self._log.seek(0)
        output = self._log.read()
        sys.stdout.write(output.decode(errors="replace"))
        if code != 0 or not self._result.is_file():
            tail = output[-_TAIL_BYTES:].decode(errors="replace")
            raise UnavailableError(
                f"materializing the online store failed in its process (exit {code}):\n{tail}"
            )
        answer: dict[str, str] = json.loads(self._result.read_text())
        return answer


def _main(argv: list[str]) -> int:
    from recops.features.store import materialize_views

    args, result = Path(argv[0]), Path(argv[1])
    settings, end = pickle.loads(args.read_bytes())  # noqa: S301 (written by the parent)
    reached = materialize_views(settings, end)
    partial = result.with_suffix(".partial")
    partial.write_text(json.dumps(reached))
    partial.replace(result)
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
