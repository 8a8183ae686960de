# Shared by the benchmark scripts (sourced): the work directory, the
# release build and DuckDB's Python package in a virtual environment.
WORK="${BENCH_WORK:-/tmp/tessera-bench}"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/tessera-target}"
mkdir -p "$WORK"

cargo build --release -p tessera-benches >&2
VENV="$WORK/venv"
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV" >&2
  "$VENV/bin/pip" install --quiet duckdb pyarrow >&2
fi
