#!/usr/bin/env bash
# Wire-protocol benchmark: `tessera serve` against PostgreSQL 15 (Debian
# package, a throwaway cluster on loopback), the same data and the same
# client (psycopg 3, benches/pg_wire.py), one system after the other.
# Usage: benches/run_pg_wire.sh [COPY_ROWS] [TABLE_ROWS] [QUERIES] [CLIENTS] [SECONDS]
# (defaults 10000000 1000000 20000 50 20; `2000000 200000 2000 50 5` is a
# smoke run of a few minutes). Runs as root; PostgreSQL runs as the
# `postgres` OS user.
set -euo pipefail
cd "$(dirname "$0")/.."
COPY_ROWS="${1:-10000000}"
TABLE_ROWS="${2:-1000000}"
QUERIES="${3:-20000}"
CLIENTS="${4:-50}"
SECS="${5:-20}"
[ "$TABLE_ROWS" -le "$COPY_ROWS" ] || { echo "TABLE_ROWS must not exceed COPY_ROWS" >&2; exit 2; }

# The conventions of benches/setup.sh (work directory, target directory,
# virtual environment); not sourced because it builds tessera-benches and
# installs DuckDB, neither of which this benchmark uses.
WORK="${BENCH_WORK:-/tmp/tessera-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
mkdir -p "$WORK"
chmod a+rx "$WORK"   # the postgres user writes its cluster below it

cargo build --release -p tessera-server --bin tessera >&2
TESSERA="$CARGO_TARGET_DIR/release/tessera"
VENV="$WORK/venv"
[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV" >&2
"$VENV/bin/python" -c 'import psycopg' 2>/dev/null || "$VENV/bin/pip" install --quiet 'psycopg[binary]==3.*' >&2
PY="$VENV/bin/python"

PGBIN=/usr/lib/postgresql/15/bin
if [ ! -x "$PGBIN/initdb" ]; then
  apt-get update >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y postgresql-15 >&2
fi
id -u postgres >/dev/null 2>&1 || useradd --system --user-group --home-dir /var/lib/postgresql --shell /bin/bash postgres

CSV="$WORK/pg-wire-events-$COPY_ROWS.csv"
[ -f "$CSV" ] || "$PY" benches/pg_wire.py gen "$CSV" "$COPY_ROWS"

free_port() { "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_port() {
  for _ in $(seq 1 300); do
    "$PY" -c 'import socket, sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 1).close()' "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  echo "nothing listens on port $1" >&2
  return 1
}

TPID=""
PGROOT="$WORK/pg15"
PG_UP=""
cleanup() {
  if [ -n "$TPID" ] && kill -0 "$TPID" 2>/dev/null; then kill -TERM "$TPID"; wait "$TPID" || true; fi
  if [ -n "$PG_UP" ]; then runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >&2 || true; fi
}
trap cleanup EXIT

COMMON=(--csv "$CSV" --table-rows "$TABLE_ROWS" --queries "$QUERIES" --clients "$CLIENTS" --seconds "$SECS")
cat /proc/loadavg > "$WORK/pg-wire-load.txt"

# Tessera: a fresh data directory; its process's memory is sampled.
TDATA="$WORK/tessera-pg-bench"
rm -rf "$TDATA"
T_PORT="$(free_port)"
"$TESSERA" serve --data-dir "$TDATA" --listen "127.0.0.1:$T_PORT" > "$WORK/pg-wire-tessera.log" 2>&1 &
TPID=$!
wait_port "$T_PORT"
"$PY" benches/pg_wire.py run --system tessera --port "$T_PORT" --user tessera --server-pid "$TPID" \
  --copy-rows "$COPY_ROWS" "${COMMON[@]}" > "$WORK/pg-wire-tessera.json"
kill -TERM "$TPID"; wait "$TPID" || true; TPID=""
cat /proc/loadavg >> "$WORK/pg-wire-load.txt"
# The size Tessera's COPY managed (the requested one unless it failed).
COPY_DONE="$("$PY" -c 'import json, sys; print(json.load(open(sys.argv[1]))["copy_rows"])' "$WORK/pg-wire-tessera.json")"

# PostgreSQL 15: a new cluster (stock settings but for the port, loopback
# only and trust authentication), database `tessera`, the same table; a
# btree index on event_id for the queries.
rm -rf "$PGROOT"
mkdir -p "$PGROOT"
chown postgres:postgres "$PGROOT"
runuser -u postgres -- "$PGBIN/initdb" -D "$PGROOT/data" --auth=trust -U postgres -E UTF8 --locale=C.UTF-8 > "$WORK/pg-wire-initdb.log" 2>&1
P_PORT="$(free_port)"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGROOT/data" -l "$PGROOT/server.log" -w \
  -o "-p $P_PORT -c listen_addresses=127.0.0.1 -c unix_socket_directories=$PGROOT" start >&2
PG_UP=1
runuser -u postgres -- "$PGBIN/psql" -h 127.0.0.1 -p "$P_PORT" -U postgres -d postgres -qc "CREATE DATABASE tessera" >&2
"$PY" benches/pg_wire.py run --system postgresql --port "$P_PORT" --user postgres \
  --copy-rows "$COPY_DONE" "${COMMON[@]}" \
  --after-load "CREATE INDEX events_event_id ON events (event_id)" --after-load "VACUUM ANALYZE events" \
  > "$WORK/pg-wire-postgresql.json"
runuser -u postgres -- "$PGBIN/pg_ctl" -D "$PGROOT/data" -m fast -w stop >&2
PG_UP=""
cat /proc/loadavg >> "$WORK/pg-wire-load.txt"

"$PY" - "$WORK" "$(git rev-parse --short HEAD 2>/dev/null || echo "${TESSERA_COMMIT:-unknown}")" <<'PY'
import json, sys
work, commit = sys.argv[1], sys.argv[2]
t = json.load(open(f"{work}/pg-wire-tessera.json"))
p = json.load(open(f"{work}/pg-wire-postgresql.json"))
load = open(f"{work}/pg-wire-load.txt").read().split("\n")
mib = lambda b: b / 2**20 if b else float("nan")
print(f"tessera {commit}; {p['server_version'].split(' on ')[0]}; psycopg {t['psycopg']}, Python {t['python']}")
print(f"COPY: {t['copy_rows']:,} rows ({t['copy_bytes'] / 1e6:.0f} MB of CSV); queries on {t['table_rows']:,} rows; "
      f"point queries: {t['point']['queries']:,} (+{t['point']['warmup']:,} warm-up); "
      f"{t['concurrent']['clients']} clients for {t['concurrent']['seconds']:.0f} s in {t['concurrent']['client_processes']} client processes")
print("load average (1/5/15 min) before, between, after: " + " | ".join(" ".join(l.split()[:3]) for l in load if l))
for f in t["copy_failures"]:
    print(f"Tessera COPY of {f['rows']:,} rows FAILED: {f['error']} (peak RSS {mib(f['peak_rss']):.0f} MiB)")
print()
print("| measure | Tessera | PostgreSQL 15 | ratio (Tessera / PostgreSQL) | goal | met |")
print("|---|---|---|---|---|---|")
def row(label, a, b, fmt, goal="", met=""):
    ratio = a / b if b else float("nan")
    print(f"| {label} | {a:{fmt}} | {b:{fmt}} | {ratio:.2f} | {goal} | {met} |")
tp, pp = t["point"], p["point"]
for k in ("p50_ms", "p99_ms"):
    r = tp[k] / pp[k]
    row(f"point query {k[:3]} (ms)", tp[k], pp[k], ".3f", "ratio ≤ 2", "yes" if r <= 2 else "no")
row("point query p99.9 (ms)", tp["p999_ms"], pp["p999_ms"], ".3f")
r = t["copy_s"] / p["copy_s"]
row(f"COPY FROM STDIN, {t['copy_rows']:,} rows (s)", t["copy_s"], p["copy_s"], ".2f", "ratio < 1", "yes" if r < 1 else "no")
row("COPY rows per second", t["copy_rows_per_s"], p["copy_rows_per_s"], ",.0f")
row("peak RSS during COPY (MiB)", mib(t["rss_after_copy"].get("VmHWM")), mib(p["rss_after_copy"].get("VmHWM")), ",.0f")
tc, pc = t["concurrent"], p["concurrent"]
row(f"{tc['clients']} clients, queries per second", tc["qps"], pc["qps"], ",.1f")
for kind in tc["by_kind"]:
    row(f"… {kind} (queries/s)", tc["by_kind"][kind]["qps"], pc["by_kind"][kind]["qps"], ",.1f")
    row(f"… {kind} p50 latency (ms)", tc["by_kind"][kind]["p50_ms"], pc["by_kind"][kind]["p50_ms"], ".2f")
te = tc["errors"] + tc["connect_errors"] + tc["wrong_results"]
pe = pc["errors"] + pc["connect_errors"] + pc["wrong_results"]
print(f"| {tc['clients']} clients, errors (+ wrong results) | {te} | {pe} | | 0 | {'yes' if te == 0 else 'no'} |")
print(f"| load of the {t['table_rows']:,}-row query table (s) | {t['table_load_s']:.2f} | {p['table_load_s']:.2f} | {t['table_load_s'] / p['table_load_s']:.2f} | | |")
print()
print("Peak RSS: Tessera = the whole `tessera serve` process (VmHWM after the COPY); "
      "PostgreSQL = the backend that ran the COPY (VmHWM), shared buffers it touched included.")
for name, d in (("Tessera", t), ("PostgreSQL", p)):
    for m, c in d["concurrent"]["error_messages"].items():
        print(f"{name} error x{c}: {m}")
    if d["point"]["wrong_results"]:
        print(f"{name}: {d['point']['wrong_results']} point queries returned a wrong result")
PY
