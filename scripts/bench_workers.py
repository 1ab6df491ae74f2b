#!/usr/bin/env python3
"""Throughput of `corral start --workers N` (default: 1 vs 2) with wrk, against the replaying mock.

    .venv/bin/python scripts/bench_workers.py [--workers 1 2] [--seconds 10] [--connections 32] [--db postgres]

Loopback only. Everything shares the machine: wrk (1 thread), the mock upstream (one asyncio thread in
this process) and the gateway processes, so the figure is what is left for the gateway, not its ceiling.
After each run it checks the record: one row per request wrk completed.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.support import corpus, pgdb
from tests.support.gateway import Gateway
from tests.support.mock_upstream import MockUpstream

NAME = "openai-chat-json-2"
LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["content-type"] = "application/json"
wrk.headers["x-mock-exchange"] = "{name}"
wrk.headers["authorization"] = "Bearer sk-bench"
"""


def run(workers: int, seconds: int, connections: int, db: str | None, mock: MockUpstream) -> dict:
    work = Path(tempfile.mkdtemp(prefix="corral-bench-workers-"))
    script = work / "post.lua"
    script.write_text(LUA.format(body=json.dumps(json.dumps(corpus.load(NAME)["request"]["body"])), name=NAME))
    gw = Gateway(mock.url, workdir=work, db=db, args=["--workers", str(workers)]).start()
    try:
        time.sleep(2)  # every worker listening
        url = gw.base("openai") + "/v1/chat/completions"
        out = subprocess.run(["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "-s", str(script), "--latency", url],
                             capture_output=True, text=True, check=True).stdout
    finally:
        gw.stop()
    done = int(re.search(r"(\d+) requests in", out).group(1))
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    p50 = re.search(r"50%\s+(\S+)", out).group(1)
    p99 = re.search(r"99%\s+(\S+)", out).group(1)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    counts = gw.query("SELECT COUNT(*) AS n, COUNT(DISTINCT id) AS ids FROM flows")[0]
    per_worker = {r["worker"]: r["n"] for r in gw.query("SELECT worker, COUNT(*) AS n FROM flows GROUP BY worker")}
    # wrk counts requests whose response arrived; in-flight ones at its deadline are recorded too
    return {"workers": workers, "req_per_s": rps, "requests": done, "p50": p50, "p99": p99,
            "non_2xx": int(non2xx.group(1)) if non2xx else 0, "rows": counts["n"], "distinct_ids": counts["ids"],
            "rows_per_worker": per_worker}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--seconds", type=int, default=10)
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument("--db", choices=["sqlite", "postgres"], default="sqlite")
    args = ap.parse_args()
    with MockUpstream(chunk_delay=0.0) as mock:
        mock.default = NAME
        for n in args.workers:
            db = pgdb.create_database() if args.db == "postgres" else None
            try:
                print(json.dumps(run(n, args.seconds, args.connections, db, mock)), flush=True)
            finally:
                if db:
                    pgdb.drop_database(db)
    return 0


if __name__ == "__main__":
    sys.exit(main())
