"""Writes benchmark results into BENCHMARKS.md (called by benches/run.sh).

Each figure lives in a generated block between
`<!-- begin generated: NAME -->` and `<!-- end generated: NAME -->`;
the prose around the blocks is written by hand and kept as it is.

  report.py check FILE PART...                    the blocks exist (before a long run)
  report.py splice FILE PART TABLE COMMIT WHAT    replace PART's block with TABLE
  report.py micro CRITERION_HOME                  criterion results as a table
  report.py header FILE COMMIT WORK PARTS         the run's machine and versions
"""
import datetime
import glob
import json
import os
import platform
import re
import subprocess
import sys


def markers(name):
    return f"<!-- begin generated: {name} -->", f"<!-- end generated: {name} -->"


def block_span(text, name, path):
    begin, end = markers(name)
    b, e = text.find(begin), text.find(end)
    if b < 0 or e < b:
        sys.exit(f"{path} has no block '{name}': add the lines\n{begin}\n{end}\nwhere its figures belong")
    return b + len(begin), e


def replace_block(path, name, body):
    text = open(path).read()
    b, e = block_span(text, name, path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(text[:b] + "\n" + body.rstrip("\n") + "\n" + text[e:])
    os.replace(tmp, path)


def check(path, parts):
    text = open(path).read()
    for name in ["run"] + parts:
        block_span(text, name, path)


def wall_times(work):
    """Seconds each part took in this run (run.sh appends a line per part)."""
    times = {}
    if os.path.exists(f"{work}/run-times.txt"):
        for line in open(f"{work}/run-times.txt"):
            name, secs = line.split()
            times[name] = int(secs)
    return times


def splice(path, name, table, commit, what):
    body = open(table).read().strip()
    if not body:
        sys.exit(f"the {name} benchmark printed no results")
    today = datetime.date.today().isoformat()
    took = wall_times(os.path.dirname(os.path.abspath(table))).get(name)
    took = f"; the part took {took // 60} min {took % 60} s with builds and data generation" if took is not None else ""
    replace_block(path, name, f"Measured {today} at commit {commit} by `benches/run.sh` ({what}{took}):\n\n{body}\n")


def human_time(ns):
    for unit, scale in (("s", 1e9), ("ms", 1e6), ("µs", 1e3)):
        if ns >= scale:
            return f"{ns / scale:.3g} {unit}"
    return f"{ns:.3g} ns"


def micro(home):
    rows = []
    for bench in sorted(glob.glob(f"{home}/*/*/new/benchmark.json")):
        meta = json.load(open(bench))
        est = json.load(open(os.path.join(os.path.dirname(bench), "estimates.json")))
        mean = est["mean"]["point_estimate"]
        low, high = est["mean"]["confidence_interval"]["lower_bound"], est["mean"]["confidence_interval"]["upper_bound"]
        elements = (meta.get("throughput") or {}).get("Elements")
        per = f"{mean / elements:.1f} ns" if elements else ""
        rate = f"{elements / (mean / 1e9) / 1e6:,.2f} M/s" if elements else ""
        rows.append(f"| {meta['group_id']}/{meta['function_id']} | {human_time(mean)} ({human_time(low)} to {human_time(high)}) | "
                    f"{elements or ''} | {per} | {rate} |")
    if not rows:
        sys.exit(f"no criterion results under {home}")
    print("| benchmark | mean time per iteration (95% interval) | elements per iteration | per element | elements per second |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


def first_line(cmd):
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.SubprocessError):
        return "not installed"


def machine():
    cpu = "unknown CPU"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
        mem = next(int(l.split()[1]) for l in open("/proc/meminfo") if l.startswith("MemTotal"))
    except (OSError, StopIteration):
        mem = 0
    return f"{os.cpu_count()} cores ({cpu}), {mem / 2**20:.0f} GiB, {platform.system()} {platform.release()}"


def header(path, commit, work, parts):
    times = wall_times(work)
    duck = first_line([f"{work}/venv/bin/python", "-c", "import duckdb; print(duckdb.__version__)"])
    pg = first_line(["/usr/lib/postgresql/15/bin/postgres", "--version"])
    took = ", ".join(f"{n} {s // 60} min {s % 60} s" for n, s in times.items())
    body = (f"Last run of `benches/run.sh`: {datetime.datetime.now().strftime('%Y-%m-%d %H:%M')} at commit {commit} "
            f"(parts: {parts}; {took}). Each block below names the run it comes from.\n\n"
            f"- machine: {machine()}\n"
            f"- {first_line(['rustc', '--version'])}, release profile\n"
            f"- DuckDB {duck} (Python package, in `{work}/venv`); {pg} (Debian package)\n")
    replace_block(path, "run", body)


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd, args = argv[1], argv[2:]
    if cmd == "check" and len(args) >= 1:
        check(args[0], args[1:])
    elif cmd == "splice" and len(args) == 5:
        splice(*args)
    elif cmd == "micro" and len(args) == 1:
        micro(args[0])
    elif cmd == "header" and len(args) == 4:
        header(*args)
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
