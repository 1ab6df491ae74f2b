"""`corral export`: recorded flows as JSON lines, CSV or HAR 1.2, oldest first, in constant memory.

Credentials were fingerprinted before they reached the database, so exports hold none either.
A progress bar goes to stderr for large exports (and only when stderr is a terminal, or --progress).
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import os
import stat
import sys
from typing import IO, Any

from addon import money
from addon.cli import common
from addon.storage import db as dbmod, queries
from addon.storage.models import Flow

FORMATS = ("jsonl", "csv", "har")
PROGRESS_MIN = 1000  # rows; below this no bar
# A spreadsheet runs a cell that starts with one of these as a formula (=HYPERLINK(...) sends data out);
# a leading tab or CR is dropped by some, which would uncover the next character.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export recorded flows as jsonl, csv or har")
    common.add_config_args(p)
    p.add_argument("--format", choices=FORMATS, default="jsonl")
    p.add_argument("--since", help="time range: 30m, 24h, 7d, or an ISO time (default: everything)")
    p.add_argument("--provider", help="only this provider")
    p.add_argument("--output", "-o", metavar="FILE", help="write here instead of stdout")
    p.add_argument("--progress", action="store_true", help="progress bar on stderr even when it is not a terminal")
    p.set_defaults(func=run)


class Progress:
    def __init__(self, total: int, stream: IO[str], enabled: bool) -> None:
        self.total, self.stream, self.enabled = total, stream, enabled and total >= PROGRESS_MIN
        self.done, self._last = 0, -1

    def step(self) -> None:
        self.done += 1
        if not self.enabled:
            return
        pct = self.done * 100 // self.total
        if pct != self._last:
            self._last = pct
            bar = "#" * (pct // 4)
            self.stream.write(f"\rexport [{bar:<25}] {pct:3d}% {self.done}/{self.total}")
            self.stream.flush()

    def close(self) -> None:
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


def _headers(value: str | None) -> list[dict[str, str]]:
    try:
        return [{"name": k, "value": v} for k, v in json.loads(value or "[]")]
    except (ValueError, TypeError):
        return []


def har_entry(flow: Flow) -> dict[str, Any]:
    """One HAR 1.2 entry. Timings the record does not have are -1, as the spec says."""
    row = queries.row_dict(flow)
    req_headers, resp_headers = _headers(flow.request_headers), _headers(flow.response_headers)
    mime = next((h["value"] for h in resp_headers if h["name"].lower() == "content-type"), "")
    req_mime = next((h["value"] for h in req_headers if h["name"].lower() == "content-type"), "")
    scheme = (flow.upstream or "https://").split("://")[0] or "https"
    url = f"{scheme}://{flow.host or 'unknown'}{flow.path}"
    duration = flow.duration_ms or 0.0
    wait = flow.ttfb_ms if flow.ttfb_ms is not None else duration
    request: dict[str, Any] = {
        "method": flow.method, "url": url, "httpVersion": "HTTP/1.1", "cookies": [], "headers": req_headers,
        "queryString": [], "headersSize": -1, "bodySize": len(flow.request_body or ""),
    }
    if flow.request_body is not None:
        request["postData"] = {"mimeType": req_mime, "text": flow.request_body}
    body = flow.response_body or ""
    return {
        "startedDateTime": row["started_at"],
        "time": duration,
        "request": request,
        "response": {
            "status": flow.status or 0, "statusText": "", "httpVersion": "HTTP/1.1", "cookies": [],
            "headers": resp_headers, "content": {"size": len(body), "mimeType": mime, "text": body},
            "redirectURL": "", "headersSize": -1, "bodySize": len(body) if flow.status else -1,
        },
        "cache": {},
        "timings": {"send": 0, "wait": wait, "receive": max(0.0, duration - wait)},
        "_corral": {k: row[k] for k in queries.LIST_FIELDS if k != "started_at"}
        | {"response_text": flow.response_text},
    }


def csv_cell(value: Any) -> Any:
    """A text cell a spreadsheet would read as a formula gets a leading ``'`` (OWASP's advice); numbers
    and other text stay as they are."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def open_private(path: str) -> IO[str]:
    """``path`` for writing, created 0600 like the database: an export holds prompts and answers. An
    existing regular file is made 0600 too before anything is written; a device or pipe
    (``-o /dev/stdout``) is left as it is."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        if stat.S_ISREG(os.fstat(fd).st_mode):
            os.fchmod(fd, 0o600)
        return open(fd, "w", encoding="utf-8", newline="")
    except BaseException:
        os.close(fd)
        raise


def write(fmt: str, flows, out: IO[str], progress: Progress) -> int:
    n = 0
    if fmt == "jsonl":
        for flow in flows:
            out.write(json.dumps(queries.row_dict(flow)) + "\n")
            n += 1
            progress.step()
    elif fmt == "csv":
        names = [f.name for f in Flow._meta.sorted_fields]
        writer = csv.DictWriter(out, fieldnames=names)
        writer.writeheader()
        for flow in flows:
            raw = queries.row_dict(flow)
            row = {k: csv_cell(v) for k, v in raw.items()}
            for key in ("cost_usd", "saved_cost_usd"):  # plain decimals: 0.0000042, never 4.2e-06
                row[key] = money.plain(raw[key])
            writer.writerow(row)
            n += 1
            progress.step()
    else:  # HAR: one JSON document, entries streamed out one by one
        out.write(
            '{"log": {"version": "1.2", "creator": {"name": "corral", "version": "0.1.0"}, "pages": [], "entries": [\n'
        )
        for flow in flows:
            out.write(("" if n == 0 else ",\n") + json.dumps(har_entry(flow)))
            n += 1
            progress.step()
        out.write("\n]}}\n")
    return n


def run(args: argparse.Namespace) -> int:
    settings = common.resolve(args)
    try:
        filters = queries.Filters(provider=args.provider, since=queries.parse_since(args.since))
        dbmod.connect(common.db_url(settings), create=False)
    except (dbmod.DatabaseError, queries.QueryError) as e:
        print(f"corral: {e}", file=sys.stderr)
        return 1
    total = queries.count(filters)
    progress = Progress(total, sys.stderr, args.progress or sys.stderr.isatty())
    with contextlib.ExitStack() as stack:
        out = stack.enter_context(open_private(args.output)) if args.output else sys.stdout
        n = write(args.format, queries.iter_flows(filters), out, progress)
    progress.close()
    if args.output:
        print(f"corral: exported {n} flows to {args.output}", file=sys.stderr)
    return 0
