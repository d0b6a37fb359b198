#!/usr/bin/env bash
# Times the audit query the server runs for GET /audit/events?identity=… (one identity's
# events, first page of 100) on a table of N events (default 10 million), on PostgreSQL and
# on SQLite.
#
#   scripts/audit-query-benchmark.sh [N] [postgres-admin-url]
#
# The events are synthetic (100 per identity, random hashes: the chain does not verify);
# only the size and shape of the table matter here. The query is the server's own statement,
# run through psql / sqlite3 with timing, 20 times for distinct identities.
set -euo pipefail
N=${1:-10000000}
PG=${2:-postgres://postgres@127.0.0.1:5432}
IDENTITIES=$(( N / 100 ))
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=${CALLSIGN_BIN:-$ROOT/target/release/callsign}
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
TENANT=00000000-0000-7000-8000-000000000001

echo "== PostgreSQL: $N events, $IDENTITIES identities"
psql -q "$PG/postgres" -c "DROP DATABASE IF EXISTS callsign_audit_bench WITH (FORCE)" -c "CREATE DATABASE callsign_audit_bench"
DB="$PG/callsign_audit_bench"
CALLSIGN_DATA_DIR="$WORK/pg" CALLSIGN_DATABASE_URL="$DB" "$BIN" migrate >/dev/null
time psql -q "$DB" <<SQL
INSERT INTO audit_events (tenant_id, seq, occurred_at, actor, operation, identity_id, outcome,
    client_request_id, request_id, source_address, user_agent, details, prev_hash, hash)
SELECT '$TENANT'::uuid, g, 1700000000000 + g, 'primaryKey', 'token.issue',
       ('00000000-0000-7000-8000-' || lpad(to_hex(g % $IDENTITIES), 12, '0'))::uuid,
       'success', NULL, gen_random_uuid()::text, '127.0.0.1', 'bench',
       '{"scopes":["chat"]}', decode(md5(g::text) || md5(g::text), 'hex'), decode(md5((g+1)::text) || md5(g::text), 'hex')
FROM generate_series(1, $N) g;
ANALYZE audit_events;
SQL
{
    echo '\timing on'
    for i in $(seq 1 20); do
        id=$(printf '00000000-0000-7000-8000-%012x' $(( (i * 7919) % IDENTITIES )))
        echo "SELECT count(*) FROM (SELECT tenant_id, seq, occurred_at, actor, operation, identity_id, outcome, client_request_id, request_id, source_address, user_agent, details, prev_hash, hash FROM audit_events WHERE tenant_id = '$TENANT' AND identity_id = '$id' ORDER BY seq ASC LIMIT 101) q;"
    done
} | psql -q "$DB" | grep '^Time' | awk '{print $2}' | sort -n | awk '{a[NR]=$1} END {printf "PostgreSQL query ms: median %.2f  max %.2f  (n=%d)\n", a[int((NR+1)/2)], a[NR], NR}'
psql -q "$DB" -c "EXPLAIN ANALYZE SELECT * FROM audit_events WHERE tenant_id = '$TENANT' AND identity_id = '00000000-0000-7000-8000-000000000007' ORDER BY seq ASC LIMIT 101" | grep -E "Index|Execution"
psql -q "$PG/postgres" -c "DROP DATABASE callsign_audit_bench WITH (FORCE)"

echo "== SQLite: $N events, $IDENTITIES identities"
SQLITE="$WORK/sqlite/callsign.db"
CALLSIGN_DATA_DIR="$WORK/sqlite" "$BIN" migrate >/dev/null
time sqlite3 "$SQLITE" <<SQL
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
CREATE TABLE bench_ids (k INTEGER PRIMARY KEY, id BLOB NOT NULL);
WITH RECURSIVE g(n) AS (SELECT 0 UNION ALL SELECT n + 1 FROM g WHERE n < $IDENTITIES - 1)
INSERT INTO bench_ids SELECT n, randomblob(16) FROM g;
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < $N)
INSERT INTO audit_events (tenant_id, seq, occurred_at, actor, operation, identity_id, outcome,
    client_request_id, request_id, source_address, user_agent, details, prev_hash, hash)
SELECT x'${TENANT//-/}', n, 1700000000000 + n, 'primaryKey', 'token.issue',
       (SELECT id FROM bench_ids WHERE k = n % $IDENTITIES),
       'success', NULL, hex(randomblob(16)), '127.0.0.1', 'bench', '{"scopes":["chat"]}',
       randomblob(32), randomblob(32)
FROM g;
ANALYZE;
SQL
{
    echo '.timer on'
    for i in $(seq 1 20); do
        id=$(sqlite3 "$SQLITE" "SELECT hex(id) FROM bench_ids WHERE k = $(( (i * 7919) % IDENTITIES ))")
        echo "SELECT count(*) FROM (SELECT tenant_id, seq, occurred_at, actor, operation, identity_id, outcome, client_request_id, request_id, source_address, user_agent, details, prev_hash, hash FROM audit_events WHERE tenant_id = x'${TENANT//-/}' AND identity_id = x'$id' ORDER BY seq ASC LIMIT 101);"
    done
} | sqlite3 "$SQLITE" | grep '^Run Time' | awk '{print $4 * 1000}' | sort -n | awk '{a[NR]=$1} END {printf "SQLite query ms: median %.2f  max %.2f  (n=%d)\n", a[int((NR+1)/2)], a[NR], NR}'
sqlite3 "$SQLITE" "EXPLAIN QUERY PLAN SELECT * FROM audit_events WHERE tenant_id = x'${TENANT//-/}' AND identity_id = (SELECT id FROM bench_ids WHERE k = 7) ORDER BY seq LIMIT 101"
