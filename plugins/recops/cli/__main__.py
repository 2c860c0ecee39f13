"""``python -m recops.cli``: the same as the ``recops`` console script."""

from __future__ import annotations

from recops.cli.app import main

if __name__ == "__main__":
    main()
