"""How fast is the viewer's flow list at 1,000,000 rows? Inserts synthetic rows into a temp SQLite DB
(created by addon/storage/db.py, so with the real schema and indexes) and times the list queries the API
runs: first page, a deep page (keyset), filtered pages, the after-cursor poll, and the analytics query.

    .venv/bin/python bench/viewer_pagination.py [--rows 1000000] [--keep DB]
"""

from __future__ import annotations

import argparse
import datetime
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from addon.storage import db as dbmod, queries
from addon.storage.models import Flow

PROVIDERS = [("openai", "gpt-4o-mini"), ("openai", "gpt-4.1"), ("anthropic", "claude-haiku-4-5"),
             ("gemini", "gemini-2.5-flash"), ("groq", "llama-3.3-70b"), ("mistral", "mistral-small")]


def fill(rows: int) -> None:
    rnd = random.Random(7)
    start = datetime.datetime(2026, 1, 1)
    batch = []
    for i in range(rows):
        provider, model = PROVIDERS[rnd.randrange(len(PROVIDERS))]
        status = 200 if rnd.random() < 0.95 else rnd.choice([400, 429, 500, 503])
        batch.append({
            "id": f"{i:08d}-synthetic",
            "started_at": start + datetime.timedelta(milliseconds=i * 250 + rnd.randrange(100)),
            "mode": "reverse", "provider": provider, "method": "POST", "host": "api.example",
            "path": "/v1/chat/completions", "model": model, "status": status, "stream": rnd.random() < 0.5,
            "ttfb_ms": rnd.uniform(50, 900), "duration_ms": rnd.uniform(100, 9000),
            "input_tokens": rnd.randrange(10, 4000), "output_tokens": rnd.randrange(1, 800),
            "cost_usd": rnd.uniform(0, 0.01), "cache": rnd.choice(["off", "off", "off", "miss", "hit"]),
            "request_body": f'{{"model": "{model}", "messages": [{{"role": "user", "content": "question {i}"}}]}}',
            "response_text": f"answer {i}",
        })
        if len(batch) == 5000:
            Flow.insert_many(batch).execute()
            batch.clear()
    if batch:
        Flow.insert_many(batch).execute()


def timed(label: str, fn, repeat: int = 5) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        times.append((time.perf_counter() - t) * 1000)
    ms = statistics.median(times)
    n = len(result["flows"]) if isinstance(result, dict) and "flows" in result else ""
    print(f"{label:<52} {ms:9.2f} ms  {n}")
    return ms


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--keep", help="use/keep this DB file (reuse skips the insert)")
    args = ap.parse_args()
    path = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="corral-bench-")) / "flows.db"
    fresh = not path.exists()
    db = dbmod.connect(f"sqlite:///{path}")
    if fresh:
        t = time.perf_counter()
        with db.atomic():
            fill(args.rows)
        print(f"inserted {args.rows:,} rows in {time.perf_counter() - t:.1f}s into {path}")
    total = Flow.select().count()
    print(f"rows: {total:,}")
    f = queries.Filters()
    first = queries.list_flows(f, 50)
    timed("first page (50 rows)", lambda: queries.list_flows(f, 50))
    # A deep page: the cursor of a row ~900,000 rows down, as if the user paged that far.
    newest_first = (Flow.started_at.desc(), Flow.id.desc())
    deep_row = Flow.select(Flow.started_at, Flow.id).order_by(*newest_first).offset(int(total * 0.9)).limit(1).get()
    deep = f"{deep_row.started_at.isoformat()}|{deep_row.id}"
    timed(f"deep page (after row {int(total * 0.9):,}, keyset)", lambda: queries.list_flows(f, 50, before=deep))
    timed("same depth with OFFSET (what keyset avoids)", lambda: {"flows": list(
        Flow.select(Flow.id).order_by(*newest_first).offset(int(total * 0.9)).limit(50))}, repeat=3)
    newest = queries.encode_cursor(first["flows"][0])
    timed("live poll: rows newer than the newest shown", lambda: queries.list_flows(f, 200, after=newest))
    for label, filt in [("provider=anthropic", queries.Filters(provider="anthropic")),
                        ("model=gemini-2.5-flash", queries.Filters(model="gemini-2.5-flash")),
                        ("status=5xx", queries.Filters(status="5xx")), ("cache=hit", queries.Filters(cache="hit")),
                        ("status=5xx, deep page", queries.Filters(status="5xx"))]:
        before = deep if "deep" in label else None
        timed(f"first page, {label}", lambda filt=filt, before=before: queries.list_flows(filt, 50, before=before))
    recent = queries.Filters(q=f"question {total - 10}")
    timed("text search, recent match (q='question 999990')", lambda: queries.list_flows(recent, 50), repeat=3)
    nowhere = queries.Filters(q="no such text")
    timed("text search, no match (full scan)", lambda: queries.list_flows(nowhere, 50), repeat=1)
    last = Flow.select(Flow.started_at).order_by(Flow.started_at.desc()).limit(1).scalar()
    for hours in (1, 24):
        span = queries.Filters(since=last - datetime.timedelta(hours=hours), until=last)
        label = f"analytics, last {hours}h ({span.where(Flow.select()).count():,} rows)"
        timed(label, lambda span=span: queries.analytics(span), repeat=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
