#!/usr/bin/env bash
# Identity benchmark: Tessera and DuckDB on the same generated multi-source
# data set (Parquet), in the same run. Usage: benches/run_identity.sh [PEOPLE] [LOADS]
# (100000 is a smoke run of a few minutes; 1000000 is the reference run).
# Each side's timed load and resolution runs LOADS times (default 3), each
# into a new database; the tables give the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
PEOPLE="${1:-100000}"
LOADS="${2:-3}"
. benches/setup.sh

/usr/bin/time -f "%M" -o "$WORK/tessera.rss" "$CARGO_TARGET_DIR/release/tessera-bench" identity "$WORK" "$PEOPLE" "$LOADS" > "$WORK/tessera-identity.json"
/usr/bin/time -f "%M" -o "$WORK/duckdb.rss" "$VENV/bin/python" benches/duckdb_identity.py "$WORK" "$PEOPLE" "$LOADS" > "$WORK/duckdb-identity.json"

"$VENV/bin/python" - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
t = json.load(open(f"{w}/tessera-identity.json")); d = json.load(open(f"{w}/duckdb-identity.json"))
t_rss = int(open(f"{w}/tessera.rss").read().split()[-1]) / 1024; d_rss = int(open(f"{w}/duckdb.rss").read().split()[-1]) / 1024
resolve_t = max(t["end_to_end_s"] - t["load_only_s"], 1e-9)
print(f"people: {t['people']:,.0f}   rows: {t['rows']:,.0f}   identifier values: {t['identifier_values']:,.0f}   duckdb {d['version']} (threads={d['threads']}, {d['iterations']} iterations)")
loads = int(t["loads"])
t_runs = ", ".join(f"{t[f'end_to_end_s_{i}']:.2f}" for i in range(1, loads + 1))
p_runs = ", ".join(f"{t[f'load_only_s_{i}']:.2f}" for i in range(1, loads + 1))
d_runs = ", ".join(f"{x:.2f}" for x in d["end_to_end_runs_s"])
print(f"Times are medians of {loads} runs of each side, each into a new database (end to end, s: Tessera {t_runs}; "
      f"its load only {p_runs}; DuckDB {d_runs}).")
print()
print("| measure | Tessera | DuckDB | DuckDB / Tessera |")
print("|---|---|---|---|")
print(f"| load and resolve, files to profiles (s) | {t['end_to_end_s']:.2f} | {d['end_to_end_s']:.2f} | {d['end_to_end_s'] / t['end_to_end_s']:.2f}x |")
print(f"| load only (s) | {t['load_only_s']:.2f} | {d['load_s']:.2f} | {d['load_s'] / t['load_only_s']:.2f}x |")
print(f"| resolution step (s) | {resolve_t:.2f} | {d['resolve_s']:.2f} | {d['resolve_s'] / resolve_t:.2f}x |")
print(f"| profiles | {t['profiles']:,.0f} | {d['profiles']:,.0f} | |")
print(f"| pairwise precision | {t['pairwise_precision']:.4f} | {d['pairwise_precision']:.4f} | |")
print(f"| pairwise recall | {t['pairwise_recall']:.4f} | {d['pairwise_recall']:.4f} | |")
print(f"| profile lookup by a raw email, p50 (ms) | {t['lookup_p50_ms']:.2f} | {d['lookup_p50_ms']:.2f} | {d['lookup_p50_ms'] / t['lookup_p50_ms']:.1f}x |")
print(f"| profile lookup by a raw email, p99 (ms) | {t['lookup_p99_ms']:.2f} | {d['lookup_p99_ms']:.2f} | {d['lookup_p99_ms'] / t['lookup_p99_ms']:.1f}x |")
print(f"| lookups that found a profile (of 200) | {t['lookup_found']:.0f} | {d['lookup_found']:.0f} | |")
print(f"| peak memory (MB) | {t_rss:.0f} | {d_rss:.0f} | |")
print()
resolve_cpu = max(t["end_to_end_cpu_s"] - t["load_only_cpu_s"], 1e-9)
print(f"Tessera: {t['identifier_values'] / resolve_t / 1e6:.2f} M identifier links/s over the resolution step's wall time, "
      f"{t['identifier_values'] / resolve_cpu / 1e6:.2f} M per CPU-second it added "
      f"(CPU seconds: load and resolve {t['end_to_end_cpu_s']:.1f}, load only {t['load_only_cpu_s']:.1f}); "
      f"graph {t['graph_bytes_per_identifier']:.1f} bytes per identifier ({t['graph_nodes']:,.0f} identifiers); "
      f"insert then lookup p50 {t['insert_then_lookup_p50_ms']:.2f} ms, p99 {t['insert_then_lookup_p99_ms']:.2f} ms; "
      f"reopen of the database (saved dictionary; graph rebuilt) {t['open_s']:.2f} s")
PY
