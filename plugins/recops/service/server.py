"""``python -m recops.service.server``: the recommendation service on uvicorn, in the foreground.

``recops service start`` runs this detached (``recops.service.daemon``); docker-compose
runs it as the ``recommend`` service.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def main(argv: Sequence[str] | None = None) -> int:
    """Serve until signalled; the pidfile (if given) is removed on the way out."""
    from recops_models.tf_env import use_legacy_keras

    from recops.config import Settings
    from recops.serving.daemon import write_pid

    use_legacy_keras()
    settings = Settings.from_env()
    parser = argparse.ArgumentParser(
        prog="python -m recops.service.server", description="The recops recommendation service."
    )
    parser.add_argument("--host", default=settings.recommend_host, help="address to bind")
    parser.add_argument("--port", type=int, default=settings.recommend_port, help="HTTP port")
    parser.add_argument("--pidfile", type=Path, default=None, help="where to record this pid")
    parser.add_argument(
        "--refresh-s", type=float, default=2.0, help="seconds between state source checks"
    )
    args = parser.parse_args(argv)
    check_profile(settings)
    import uvicorn

    from recops.service.app import create_app

    if args.pidfile is not None:
        write_pid(args.pidfile, os.getpid())
    try:
        uvicorn.run(
            create_app(settings, refresh_s=args.refresh_s),
            host=args.host,
            port=args.port,
            log_level="warning",
            # Per-request access lines cost latency; /metrics counts the requests.
            access_log=False,
            loop="uvloop",
            http="httptools",
        )
    finally:
        if args.pidfile is not None:
            args.pidfile.unlink(missing_ok=True)
    return 0


def check_profile(settings: object) -> None:
    """Refuse the scale profile without an events token (the endpoint would be open).

    Raises:
        ParamError: ``RECOPS_PROFILE=scale`` and ``RECOPS_EVENTS_TOKEN`` is empty.
    """
    from recops.errors import ParamError

    if getattr(settings, "profile", "") == "scale" and not getattr(settings, "events_token", ""):
        raise ParamError(
            "the scale profile serves POST /v1/events only with a token, and "
            "RECOPS_EVENTS_TOKEN is empty; hint: set RECOPS_EVENTS_TOKEN (make compose-env "
            "writes one to .env)"
        )


if __name__ == "__main__":
    raise SystemExit(main())
