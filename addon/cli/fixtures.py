"""`corral fixtures list | show | prune | merge`: fixture sets (record/replay) as files.

A set is one YAML file (addon/fixtures/fileformat.py); these commands read and rewrite it in place,
keeping its deterministic order, so what they change is a readable diff in the app's repository.
"""

from __future__ import annotations

import argparse
import fnmatch
import sys
from collections import Counter
from pathlib import Path

from addon.cli.table import render_table
from addon.fixtures import fileformat
from addon.fixtures.book import set_file
from addon.fixtures.fileformat import FixtureFileError, FixtureSet


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("fixtures", help="record/replay fixture sets: list, show, prune, merge")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    ls = actions.add_parser("list", help="the sets in a directory (or files) with their exchanges")
    ls.add_argument("paths", nargs="*", default=["fixtures"], metavar="PATH")
    ls.set_defaults(func=run_list)
    show = actions.add_parser("show", help="print a set (or one exchange) as it is stored")
    show.add_argument("path", metavar="SET")
    show.add_argument("-n", "--number", type=int, help="only exchange N (1-based, as `list` counts)")
    show.set_defaults(func=run_show)
    prune = actions.add_parser("prune", help="remove exchanges by provider, model, status")
    prune.add_argument("path", metavar="SET")
    prune.add_argument("--provider", help="only this provider's exchanges")
    prune.add_argument("--model", help="only models matching this pattern (gpt-4o*)")
    prune.add_argument("--errors", action="store_true", help="only exchanges answered with status >= 400")
    prune.add_argument("--dry-run", action="store_true", help="say what would go, change nothing")
    prune.set_defaults(func=run_prune)
    merge = actions.add_parser("merge", help="merge sets into one (identical exchanges kept once)")
    merge.add_argument("out", metavar="OUT")
    merge.add_argument("inputs", nargs="+", metavar="SET")
    merge.set_defaults(func=run_merge)


def _resolve(path: str) -> Path:
    p = Path(path)
    return p if p.is_file() or p.suffix in (".yaml", ".yml") else set_file(path, "default")


def _load(path: Path) -> FixtureSet:
    if not path.exists():
        raise SystemExit(f"corral: no fixture set at {path}")
    try:
        return fileformat.load(path)
    except FixtureFileError as e:
        raise SystemExit(f"corral: {e}") from None


def _files(paths: list[str]) -> list[Path]:
    out: list[Path] = []
    for raw in paths:
        p = Path(raw)
        out += sorted(p.glob("*.yaml")) + sorted(p.glob("*.yml")) if p.is_dir() else [p]
    return out


def run_list(args: argparse.Namespace) -> int:
    rows = []
    for path in _files(args.paths):
        fixtures = _load(path)
        providers = Counter(ex.provider for ex in fixtures.exchanges)
        models = sorted({ex.model for ex in fixtures.exchanges if ex.model})
        streams = sum(ex.stream for ex in fixtures.exchanges)
        rows.append([str(path), str(len(fixtures.exchanges)), str(streams),
                     ", ".join(f"{p} {n}" for p, n in sorted(providers.items())), ", ".join(models)])
    if not rows:
        print("no fixture sets found")
        return 0
    print(render_table(["set", "exchanges", "streams", "providers", "models"], rows))
    return 0


def run_show(args: argparse.Namespace) -> int:
    fixtures = _load(_resolve(args.path))
    if args.number is not None:
        ordered = fileformat.ordered(fixtures.exchanges)
        if not 1 <= args.number <= len(ordered):
            print(f"corral: the set has {len(ordered)} exchanges")
            return 2
        fixtures = FixtureSet([ordered[args.number - 1]], fixtures.match)
    sys.stdout.write(fileformat.dumps(fixtures))
    return 0


def run_prune(args: argparse.Namespace) -> int:
    path = _resolve(args.path)
    fixtures = _load(path)

    def goes(ex: fileformat.Exchange) -> bool:
        return ((args.provider is None or ex.provider == args.provider)
                and (args.model is None or fnmatch.fnmatchcase(ex.model or "", args.model))
                and (not args.errors or ex.status >= 400))

    if args.provider is None and args.model is None and not args.errors:
        print("corral: say what to prune (--provider, --model, --errors)")
        return 2
    kept = [ex for ex in fixtures.exchanges if not goes(ex)]
    removed = len(fixtures.exchanges) - len(kept)
    if not args.dry_run:
        fileformat.save(path, FixtureSet(kept, fixtures.match))
    print(f"{'would remove' if args.dry_run else 'removed'} {removed} of {len(fixtures.exchanges)} exchanges")
    return 0


def run_merge(args: argparse.Namespace) -> int:
    merged = FixtureSet()
    seen: set[str] = set()
    for raw in args.inputs:
        fixtures = _load(_resolve(raw))
        for key, value in fixtures.match.items():
            merged.match.setdefault(key, value)
        for ex in fixtures.exchanges:
            text = fileformat.dumps(FixtureSet([ex]))
            if text not in seen:
                seen.add(text)
                merged.exchanges.append(ex)
    out = _resolve(args.out)
    fileformat.save(out, merged)
    print(f"{out}: {len(merged.exchanges)} exchanges from {len(args.inputs)} sets")
    return 0
