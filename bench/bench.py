#!/usr/bin/env python3
"""krscore benchmark: the same daily-points job done by `krscore sync`, DuckDB and pandas.

Generates exports with a fixed seed (an English variant: `,` delimiter, quoted `1,234`
thousands; a Russian-Excel variant: `;`, decimal comma, space thousands), then times each
tool in alternating rounds and prints rows, size, median time, rows/s, MB/s, peak RSS and the
ratio to krscore. Also times scoring 10 000 KRs (P4), the idle RSS of `krscore run` (P5) and,
with PostgreSQL, the points upsert against a plain COPY (P3).

Usage: bench/run [--rows N] [--rounds N] [--smoke]
"""

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("KRSCORE_BENCH_DIR", Path.home() / ".cache" / "krscore-bench"))
TARGET = Path(os.environ.get("CARGO_TARGET_DIR", Path.home() / ".cache" / "krscore-target"))
BINARY = TARGET / "release" / "krscore"

CHANNELS = ["organic", "paid_search", "social", "email", "referral", "direct"]
REGIONS = ["RU-MOW", "RU-SPE", "RU-NVS", "RU-EKB", "KZ-ALA", "KZ-AST", "KZ-SHY", "BY-MIN"]
CAMPAIGNS = [f"campaign-{i:02d}" for i in range(50)]


def generate(path: Path, rows: int, variant: str) -> None:
    """Writes `rows` daily ad/web rows over two years, reproducibly."""
    rng = random.Random(20261204)
    days = [(2025 + (d // 365), 1 + (d % 365) // 31, 1 + (d % 365) % 28) for d in range(730)]
    sep = "," if variant == "en" else ";"
    header = sep.join(["date", "channel", "region", "campaign", "sessions", "clicks", "conversions", "spend"])
    with path.open("w", encoding="utf-8", newline="") as out:
        out.write(header + "\n")
        lines = []
        for i in range(rows):
            y, m, d = days[rng.randrange(730)]
            m = min(m, 12)
            sessions = rng.randrange(1, 5000)
            clicks = rng.randrange(0, 900)
            conversions = rng.randrange(0, 40)
            spend = rng.randrange(0, 2_000_000) / 100
            if variant == "en":
                date = f"{y}-{m:02d}-{d:02d}"
                s = f'"{sessions:,}"' if sessions >= 1000 else str(sessions)
                money = f'"{spend:,.2f}"' if spend >= 1000 else f"{spend:.2f}"
            else:
                date = f"{d:02d}.{m:02d}.{y}"
                s = f"{sessions:,}".replace(",", " ")
                money = f"{spend:,.2f}".replace(",", " ").replace(".", ",")
            lines.append(sep.join([date, rng.choice(CHANNELS), rng.choice(REGIONS), rng.choice(CAMPAIGNS),
                                   s, str(clicks), str(conversions), money]))
            if len(lines) == 100_000:
                out.write("\n".join(lines) + "\n")
                lines.clear()
        if lines:
            out.write("\n".join(lines) + "\n")


def project(path: Path, data: Path, variant: str, krs: int = 12) -> Path:
    """A krscore project reading `data`, with `krs` key results."""
    proj = path / f"project-{variant}-{krs}"
    if proj.exists():
        shutil.rmtree(proj)
    (proj / "config" / "okrs").mkdir(parents=True)
    (proj / "connectors").mkdir()
    (proj / "config" / "default.toml").write_text('[scoring]\ntimezone = "Europe/Moscow"\nschedule = ""\n[service]\nlisten = ""\n')
    metrics = "".join(f'[{m}]\nkind = "counter"\n' for m in ["sessions", "clicks", "conversions", "spend"])
    metrics += '[cpa]\nkind = "derived"\nformula = "spend / conversions"\n'
    (proj / "config" / "metrics.toml").write_text(metrics)
    date_format = "%Y-%m-%d" if variant == "en" else "%d.%m.%Y"
    delimiter = "," if variant == "en" else ";"
    decimal = "." if variant == "en" else ","
    (proj / "connectors" / "ads.toml").write_text(
        f'type = "csv"\npath = "{data}"\n[format]\ndelimiter = "{delimiter}"\ndecimal = "{decimal}"\n'
        f'[date]\ncolumn = "date"\nformat = "{date_format}"\n'
        '[dimensions]\nchannel = "channel"\nregion = "region"\ncampaign = "campaign"\n'
        + "".join(f'[[metrics]]\nname = "{m}"\ncolumn = "{m}"\n' for m in ["sessions", "clicks", "conversions", "spend"])
    )
    lines = []
    per_objective = 5
    for o in range((krs + per_objective - 1) // per_objective):
        lines.append(f'[[objective]]\nid = "o{o}"\ntitle = "Objective {o}"\nperiod = "2026-Q2"\nowner = "team {o % 40}"\n')
        for k in range(per_objective):
            n = o * per_objective + k
            if n >= krs:
                break
            region = REGIONS[n % len(REGIONS)]
            campaign = CAMPAIGNS[n % len(CAMPAIGNS)]
            metric = "cpa" if n % 3 == 0 else "sessions"
            target = '"-15%"' if metric == "cpa" else '"+20%"'
            lines.append(
                f'[[objective.key_result]]\nid = "kr{n}"\ntitle = "KR {n}"\nmetric = "{metric}"\n'
                f'where = {{ region = "{region}", campaign = "{campaign}" }}\n'
                f'baseline = "previous_period"\ntarget = {target}\n'
            )
    (proj / "config" / "okrs" / "okrs.toml").write_text("\n".join(lines))
    return proj


def measure(command, env=None, cwd=None):
    """Runs a command; returns (seconds, peak RSS in MB)."""
    started = time.perf_counter()
    child = subprocess.Popen(command, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(child.pid, 0)
    seconds = time.perf_counter() - started
    stderr = child.stderr.read().decode(errors="replace") if child.stderr else ""
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {' '.join(map(str, command))}\n{stderr[-2000:]}")
    return seconds, usage.ru_maxrss / 1024


DUCKDB = """
import duckdb, sys
path, variant, out = sys.argv[1:4]
con = duckdb.connect(out)
sep = ',' if variant == 'en' else ';'
fmt = '%Y-%m-%d' if variant == 'en' else '%d.%m.%Y'
num = lambda c: (f"CAST(replace({c}, ',', '') AS DOUBLE)" if variant == 'en'
                 else f"CAST(replace(replace({c}, ' ', ''), ',', '.') AS DOUBLE)")
con.execute(f'''
CREATE TABLE points AS
SELECT strptime(date, '{fmt}')::DATE AS day, channel, region, campaign,
       sum({num('sessions')}) AS sessions, sum({num('clicks')}) AS clicks,
       sum({num('conversions')}) AS conversions, sum({num('spend')}) AS spend
FROM read_csv('{path}', delim='{sep}', header=true, all_varchar=true)
GROUP BY ALL''')
"""

PANDAS = """
import pandas as pd, sqlite3, sys
path, variant, out = sys.argv[1:4]
if variant == 'en':
    frame = pd.read_csv(path, sep=',', thousands=',', decimal='.')
    frame['day'] = pd.to_datetime(frame['date'], format='%Y-%m-%d')
else:
    frame = pd.read_csv(path, sep=';', thousands=' ', decimal=',')
    frame['day'] = pd.to_datetime(frame['date'], format='%d.%m.%Y')
points = frame.groupby(['day', 'channel', 'region', 'campaign'], as_index=False)[
    ['sessions', 'clicks', 'conversions', 'spend']].sum()
with sqlite3.connect(out) as con:
    points.to_sql('points', con, index=False)
"""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--variants", default="en,ru")
    parser.add_argument("--big-rows", type=int, default=16_000_000,
                        help="rows of the English export for P2 (16M rows make about 1 GB; 0 skips it)")
    parser.add_argument("--smoke", action="store_true", help="a small run that only checks the tools work")
    args = parser.parse_args()
    if args.smoke:
        args.rows, args.rounds, args.big_rows = 20_000, 1, 100_000
    CACHE.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="krscore-bench-"))
    results = []
    try:
        for variant in args.variants.split(","):
            data = CACHE / f"ads-{variant}-{args.rows}.csv"
            if not data.exists():
                print(f"generating {data} ...", flush=True)
                generate(data, args.rows, variant)
            size_mb = data.stat().st_size / 1e6
            proj = project(work, data, variant)
            times = {"krscore": [], "duckdb": [], "pandas": []}
            rss = {"krscore": 0.0, "duckdb": 0.0, "pandas": 0.0}
            for round_ in range(args.rounds):
                for tool in ["krscore", "duckdb", "pandas"]:
                    out = work / f"{tool}-{variant}-{round_}.db"
                    if tool == "krscore":
                        env = dict(os.environ, KRSCORE__DATABASE__URL=f"sqlite://{out}", RUST_LOG="warn")
                        seconds, peak = measure([str(BINARY), "-C", str(proj), "sync"], env=env)
                    else:
                        script = DUCKDB if tool == "duckdb" else PANDAS
                        seconds, peak = measure([sys.executable, "-c", script, str(data), variant, str(out)])
                    times[tool].append(seconds)
                    rss[tool] = max(rss[tool], peak)
            for tool, values in times.items():
                results.append((tool, variant, args.rows, size_mb, statistics.median(values), rss[tool]))
        print_table(results)
        big_export(work, args)
        postgres_write(work, args)
        scoring_and_idle(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def print_table(results) -> None:
    print()
    print(f"{'tool':<8} {'variant':<7} {'rows':>10} {'MB':>8} {'median s':>9} {'rows/s':>11} {'MB/s':>7} {'peak MB':>8} {'x krscore':>9}")
    base = {(r[1]): r[4] for r in results if r[0] == "krscore"}
    for tool, variant, rows, size, seconds, peak in results:
        print(f"{tool:<8} {variant:<7} {rows:>10} {size:>8.1f} {seconds:>9.2f} {rows / seconds:>11,.0f} "
              f"{size / seconds:>7.1f} {peak:>8.0f} {seconds / base[variant]:>9.2f}")


PG_URL = os.environ.get("KRSCORE_BENCH_POSTGRES_URL", "postgres://postgres@127.0.0.1:5432/postgres")


def psql(url: str, *args: str) -> str:
    done = subprocess.run(["psql", url, "-v", "ON_ERROR_STOP=1", "-qtA", *args],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"psql failed: {' '.join(args)}\n{done.stderr}")
    return done.stdout.strip()


def big_export(work: Path, args) -> None:
    """P2: the peak RSS of one `krscore sync` of a big export (about 1 GB by default)."""
    if args.big_rows <= 0:
        return
    data = CACHE / f"ads-en-{args.big_rows}.csv"
    if not data.exists():
        print(f"generating {data} ...", flush=True)
        generate(data, args.big_rows, "en")
    proj = project(work, data, "en")
    env = dict(os.environ, KRSCORE__DATABASE__URL=f"sqlite://{work / 'big.db'}",
               KRSCORE__LOG__FORMAT="json", RUST_LOG="info")
    log_path = work / "big.log"
    with log_path.open("w") as log_file:
        started = time.perf_counter()
        child = subprocess.Popen([str(BINARY), "-C", str(proj), "sync"], env=env,
                                 stdout=subprocess.DEVNULL, stderr=log_file)
        _, status, usage = os.wait4(child.pid, 0)
        seconds = time.perf_counter() - started
    log = log_path.read_text()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"krscore sync of the big export failed:\n{log[-2000:]}")
    summary = next((json.loads(line) for line in log.splitlines() if "connector run finished" in line), None)
    if summary is None:
        raise SystemExit(f"no run summary in the log:\n{log[-2000:]}")
    size = data.stat().st_size
    print(f"\nP2 one sync of a {size / 1e6:,.0f} MB export ({args.big_rows:,} rows, {summary['points']:,} points): "
          f"{seconds:.1f} s, peak RSS {usage.ru_maxrss / 1024:.0f} MB "
          f"(while reading {summary['read_peak_rss_mb']} MB; read {summary['read_ms'] / 1000:.1f} s, "
          f"store {summary['store_ms'] / 1000:.1f} s)")


def postgres_write(work: Path, args) -> None:
    """P3: krscore's points upsert into PostgreSQL against a plain COPY of the same rows."""
    try:
        psql(PG_URL, "-c", "SELECT 1")
    except SystemExit as err:
        print(f"\nP3 skipped: PostgreSQL is not reachable at {PG_URL} ({err})")
        return
    base = PG_URL.rsplit("/", 1)[0]
    psql(PG_URL, "-c", "DROP DATABASE IF EXISTS krscore_bench")
    psql(PG_URL, "-c", "CREATE DATABASE krscore_bench")
    url = f"{base}/krscore_bench"
    data = CACHE / f"ads-en-{args.rows}.csv"
    proj = project(work, data, "en")
    env = dict(os.environ, KRSCORE__DATABASE__URL=url, KRSCORE__LOG__FORMAT="json", RUST_LOG="info")

    def sync() -> dict:
        done = subprocess.run([str(BINARY), "-C", str(proj), "sync"], env=env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"krscore sync on PostgreSQL failed:\n{done.stderr[-2000:]}")
        for line in done.stderr.splitlines():
            if "connector run finished" in line:
                return json.loads(line)
        raise SystemExit(f"no run summary in the log:\n{done.stderr[-2000:]}")

    first = sync()
    again = sync()
    dump = work / "points.copy"
    psql(url, "-c", f"\\copy (SELECT connector, metric, day, period_end, dimensions, value, run_id FROM metric_points) TO '{dump}'")
    psql(url, "-c", "CREATE TABLE copy_target (connector text, metric text, day date, period_end date, "
                    "dimensions jsonb, value double precision, run_id bigint)")
    started = time.perf_counter()
    psql(url, "-c", f"\\copy copy_target FROM '{dump}'")
    copy_s = time.perf_counter() - started
    points = int(psql(url, "-c", "SELECT count(*) FROM copy_target"))
    upsert_s = first["store_ms"] / 1000
    again_s = again["store_ms"] / 1000
    print(f"\nP3 {points:,} points into PostgreSQL: COPY {copy_s:.2f} s ({points / copy_s:,.0f}/s); "
          f"krscore upsert {upsert_s:.2f} s ({points / max(upsert_s, 1e-9):,.0f}/s, "
          f"{copy_s / max(upsert_s, 1e-9):.2f}x the COPY speed); "
          f"re-sync of unchanged points {again_s:.2f} s")
    psql(PG_URL, "-c", "DROP DATABASE IF EXISTS krscore_bench")


def scoring_and_idle(work: Path, args) -> None:
    """P4: scoring 10 000 KRs; P5: idle RSS of `krscore run`."""
    krs = 200 if args.smoke else 10_000
    data = CACHE / f"ads-en-{args.rows}.csv"
    proj = project(work, data, "en", krs=krs)
    db = work / "scoring.db"
    env = dict(os.environ, KRSCORE__DATABASE__URL=f"sqlite://{db}", RUST_LOG="warn")
    measure([str(BINARY), "-C", str(proj), "sync"], env=env)
    seconds, peak = measure([str(BINARY), "-C", str(proj), "score", "--as-of", "2026-06-30"], env=env)
    print(f"\nP4 scoring {krs} KRs over two years of daily points: {seconds:.2f} s (peak {peak:.0f} MB)")

    # P5 for a typical project (a dozen KRs, a fresh database), then for the one just scored
    small = project(work, data, "en")
    small_env = dict(env, KRSCORE__DATABASE__URL=f"sqlite://{work / 'idle.db'}")
    print(f"P5 idle `krscore run` (no schedules due): {idle_rss(small, small_env):.1f} MB RSS "
          f"with 12 KRs; {idle_rss(proj, env):.1f} MB with the {krs} KRs and their scores")


def idle_rss(proj: Path, env: dict) -> float:
    """RSS in MB of `krscore run` five seconds after it starts."""
    child = subprocess.Popen([str(BINARY), "-C", str(proj), "run"], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(5)
    status = Path(f"/proc/{child.pid}/status").read_text()
    rss_kb = next(int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS"))
    child.terminate()
    child.wait(timeout=30)
    return rss_kb / 1024


if __name__ == "__main__":
    main()
