#!/usr/bin/env bash
# Write the .env that docker-compose.yaml reads, with fresh random secrets.
#
#   compose/gen-env.sh [OUTPUT]     (default: .env at the repository root)
#
# Refuses to overwrite: Postgres, MLflow and Airflow keep the first passwords
# and keys they were started with in their volumes, so silently regenerating
# .env would lock the stack out of its own data. To rotate, change the secret
# in the service first, then edit .env by hand.
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${1:-${repo_root}/.env}"

if [[ -e "${out}" ]]; then
  echo "gen-env: ${out} already exists; not overwriting it (see the comment in $0)." >&2
  exit 1
fi

# Python rather than openssl: it is on every machine that builds this repo, and
# O_EXCL makes the no-overwrite check and the 0600 create one atomic step.
python3 - "${out}" <<'PY'
import base64
import os
import secrets
import sys
from datetime import datetime, timezone

out = sys.argv[1]


def token() -> str:
    # Hex only: POSTGRES_PASSWORD goes inside connection URLs, where
    # '@', '/', ':' or '%' would need escaping; one alphabet keeps it simple.
    return secrets.token_hex(32)


values = {
    "POSTGRES_PASSWORD": token(),
    "AIRFLOW_ADMIN_USERNAME": "admin",
    "AIRFLOW_ADMIN_PASSWORD": token(),
    # Fernet needs exactly 32 random bytes, url-safe base64 encoded.
    "AIRFLOW_FERNET_KEY": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    "AIRFLOW_API_SECRET_KEY": token(),
    "AIRFLOW_JWT_SECRET": token(),
    "MLFLOW_TRACKING_USERNAME": "admin",
    "MLFLOW_TRACKING_PASSWORD": token(),
    "MLFLOW_FLASK_SERVER_SECRET_KEY": token(),
    "RECOPS_EVENTS_TOKEN": token(),
}

stamp = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
lines = [
    f"# Written by compose/gen-env.sh at {stamp}. Secret: never commit it.",
    "# Every variable is described in .env.example.",
    *(f"{name}={value}" for name, value in values.items()),
    "",
]
fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
with os.fdopen(fd, "w") as handle:
    handle.write("\n".join(lines))
print(f"gen-env: wrote {out}")
PY
