#!/usr/bin/env bash
# Creates stacdrop's job ledger database next to the pgstac one. Mounted into the pgstac image's
# /docker-entrypoint-initdb.d/, which runs it once, when the data volume is empty (an existing volume:
# run it by hand, `docker compose exec postgres bash /docker-entrypoint-initdb.d/zz-stacdrop-ledger.sh`).
# stacdrop creates its tables itself on first start. Idempotent.
set -euo pipefail
db="${STACDROP_LEDGER_DB:-stacdrop}"
exists="$(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres -tAc \
  "SELECT 1 FROM pg_database WHERE datname = '${db//\'/\'\'}'")"
if [ "$exists" != "1" ]; then
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE \"${db//\"/\"\"}\" OWNER \"${POSTGRES_USER//\"/\"\"}\""
fi
