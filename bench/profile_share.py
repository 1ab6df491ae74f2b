"""Shares of a py-spy profile: ``python bench/profile_share.py STACKS.txt [NAME=SUBSTRING ...]``.

STACKS.txt is ``py-spy record --gil -f raw`` output (one collapsed stack and its sample count per line).
For each NAME=SUBSTRING it prints the inclusive share of samples whose stack has a frame containing
SUBSTRING (a file path such as ``addon/keys/`` or a function name); then the top frames by inclusive
share. Multiplied by the system's CPU ms per request, a share is that code's cost per request,
independent of how busy the machine was.
"""

from __future__ import annotations

import collections
import os
import sys


def load(path: str) -> list[tuple[list[str], int]]:
    stacks = []
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if stack and count.isdigit():
            stacks.append((stack.split(";"), int(count)))
    return stacks


def shares(stacks: list[tuple[list[str], int]], needles: dict[str, str]) -> dict[str, float]:
    total = sum(n for _, n in stacks) or 1
    return {name: sum(n for frames, n in stacks if any(needle in f for f in frames)) / total
            for name, needle in needles.items()}


def top(stacks: list[tuple[list[str], int]], limit: int = 15) -> list[tuple[str, float]]:
    total = sum(n for _, n in stacks) or 1
    inclusive: collections.Counter[str] = collections.Counter()
    for frames, n in stacks:
        for f in set(frames[1:]):  # frames[0] is the thread
            inclusive[f] += n
    return [(f, n / total) for f, n in inclusive.most_common(limit)]


def main() -> None:
    stacks = load(sys.argv[1])
    needles = dict(arg.split("=", 1) for arg in sys.argv[2:])
    print(f"{sum(n for _, n in stacks)} samples")
    for name, share in shares(stacks, needles).items():
        print(f"  {name:<24} {share * 100:5.1f} %")
    for frame, share in top(stacks, int(os.environ.get("TOP", "15"))):
        print(f"  {share * 100:5.1f} %  {frame[:140]}")


if __name__ == "__main__":
    main()
