"""Corral vs direct, plain mitmproxy, Portkey's gateway and LiteLLM, side by side in one run. Use `make bench`
(or `bench/run [--quick]`), which installs wrk and LiteLLM first; this module is the orchestrator.

Every system runs at once on its own loopback port in front of one mock upstream (bench/mock.py);
each scenario is run system after system (A B C A B C ...) for several rounds, so a noisy moment on
the shared 2-core box hits every system alike. Figures are medians over the rounds.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import in_process
import report
import scenarios as scen
import systems as sysmod


def version(cmd: list[str]) -> str | None:
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        return (out.stdout or out.stderr).strip().splitlines()[-1][:120]
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), None)
    return {
        "cores": os.cpu_count(), "cpu": cpu, "kernel": platform.release(),
        "python": platform.python_version(),
        "mitmproxy": version([str(sysmod.VENV / "python"), "-c", "import mitmproxy.version as v; print(v.VERSION)"]),
        "litellm": version([str(sysmod.LITELLM_VENV / "python"), "-c",
                            "import importlib.metadata as m; print(m.version('litellm'))"]),
        "portkey": portkey_version(),
        "node": version(["node", "--version"]),
        "wrk": version(["wrk", "--version"]),
        "corral_commit": version(["git", "-C", str(sysmod.ROOT), "describe", "--always", "--dirty"]),
    }


def portkey_version() -> str | None:
    try:
        pkg = sysmod.PORTKEY_SCRIPT.parent.parent / "package.json"
        return json.loads(pkg.read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def append_history(path: Path, record: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")


def profile_start(system: sysmod.System, out: Path, seconds: float) -> subprocess.Popen | None:
    """py-spy on a Python system (Corral or mitmdump): samples of the thread holding the GIL (Python CPU),
    collapsed stacks for bench/profile_share.py; every process of its tree (--workers 2)."""
    spy = sysmod.BENCH / ".venv-tools" / "bin" / "py-spy"
    if not spy.exists() or system.pid is None or not system.name.startswith(("corral", "mitm")):
        if not spy.exists():
            print(f"  (no profile: {spy} missing)")
        return None
    return subprocess.Popen([str(spy), "record", "--gil", "--subprocesses", "-r", "200", "-f", "raw",
                             "-o", str(out), "--pid", str(system.pid), "--duration", str(max(1, int(seconds)))],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def settle(system: sysmod.System, budget: float = 30.0) -> None:
    """Wait until the system answers one request promptly: a system still working off the previous
    scenario (LiteLLM after 1,000 open streams) would otherwise be measured on its backlog."""
    deadline = time.monotonic() + budget
    while time.monotonic() < deadline:
        started = time.monotonic()
        ok, _ = sysmod.probe(system.port, system.path, system.headers)
        if ok and time.monotonic() - started < 0.5:
            return
        time.sleep(0.5)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="short rounds, fewer scenarios (< 2 minutes)")
    p.add_argument("--rounds", type=int, help="rounds of every scenario (default 3; quick 3)")
    p.add_argument("--duration", type=float, help="seconds per timed run (default 3; quick 1)")
    p.add_argument("--systems", help="comma-separated subset (direct,mitm,mitm-lazy,mitm-tee,portkey,corral,"
                                     "corral-w2,corral-cache,corral-limits,litellm)")
    p.add_argument("--no-history", action="store_true", help="do not append to bench/history.jsonl")
    p.add_argument("--scenarios", help="comma-separated subset of scenario names")
    p.add_argument("--profile", metavar="SCENARIO", action="append", default=[],
                   help="py-spy record Corral and mitmdump during this scenario in round 1 (collapsed stacks "
                        "next to the results; bench/profile_share.py sums them)")
    p.add_argument("--out", help="result file (default bench/results/<timestamp>.json)")
    a = p.parse_args(argv)
    rounds = a.rounds or 3
    duration = a.duration or (1.0 if a.quick else 3.0)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    results_dir = sysmod.BENCH / "results"
    workdir = results_dir / f"tmp-{stamp}"
    workdir.mkdir(parents=True, exist_ok=True)
    out_path = Path(a.out) if a.out else results_dir / f"{stamp}{'-quick' if a.quick else ''}.json"
    wanted = set(a.systems.split(",")) if a.systems else None
    plan = [s for s in scen.scenarios(a.quick) if not a.scenarios or s.name in a.scenarios.split(",")]

    info = machine()  # at the start: the commit measured, not the one checked out by the end
    used = {name for sc in plan for name in sc.systems}
    wanted = (wanted or used) & used  # a system no planned scenario uses is not started
    t_start = time.monotonic()
    mock_port = sysmod.free_port()
    mock_log = (workdir / "mock.log").open("wb")
    mock = subprocess.Popen([str(sysmod.VENV / "python"), str(sysmod.BENCH / "mock.py"), "--port", str(mock_port)],
                            stdout=mock_log, stderr=subprocess.STDOUT)
    systems = sysmod.build(mock_port, workdir, wanted)
    scen.MOCK_PORT = mock_port
    try:
        for _ in range(100):
            if sysmod.probe(mock_port, "/v1/chat/completions")[0]:
                break
            time.sleep(0.1)
        load_before = loadavg()
        print(f"bench: mock upstream on 127.0.0.1:{mock_port}; work files in {workdir}; "
              f"load average {load_before}")
        # Started side by side: LiteLLM alone takes ~15 s to come up.
        with concurrent.futures.ThreadPoolExecutor(len(systems)) as pool:
            list(pool.map(lambda s: s.start(workdir), [s for s in systems if s.status == "pending"]))
        for s in systems:
            state = f"ok on 127.0.0.1:{s.port}" if s.status == "ok" else f"SKIPPED: {s.note}"
            print(f"bench: {s.label:<28} {state}", flush=True)
        live = {s.name: s for s in systems if s.status == "ok"}
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            list(pool.map(scen.warm_up, [s for s in live.values() if s.cmd is not None]))
        print(f"bench: systems warmed up ({time.monotonic() - t_start:.0f} s in)", flush=True)
        samples: dict[str, dict[str, list[dict]]] = {}
        for rnd in range(rounds):
            print(f"bench: round {rnd + 1}/{rounds} ({time.monotonic() - t_start:.0f} s in)", flush=True)
            for sc in plan:
                if sc.once and rnd > 0:
                    continue
                if sc.kind == "paired":
                    began = time.monotonic()
                    spies = [profile_start(live[n], results_dir / f"profile-{sc.name}-{n}-{stamp}.txt", duration * 2)
                             for n in sc.systems if n in live and sc.name in a.profile and rnd == 0]
                    figs = scen.run_paired(sc, [live[n] for n in sc.systems if n in live], duration * 2)
                    for spy in spies:
                        if spy is not None:
                            spy.wait(timeout=120)
                    for name, fig in figs.items():
                        samples.setdefault(sc.name, {}).setdefault(name, []).append(fig)
                    print(f"  {sc.name:<13} " + ", ".join(f"{n} {report.fmt(f.get('cpu_ms_per_req'))}"
                                                          for n, f in figs.items())
                          + f" CPU ms/req ({time.monotonic() - began:.1f} s)", flush=True)
                    continue
                for name in sc.systems:
                    system = live.get(name)
                    if system is None:
                        continue
                    spy = None
                    if sc.name in a.profile and rnd == 0:
                        spy = profile_start(system, results_dir / f"profile-{sc.name}-{name}-{stamp}.txt", duration)
                    if system.db is None:  # Corral's rows are counted per run: no extra request there
                        settle(system)
                    began = time.monotonic()
                    fig = scen.run(sc, system, duration, a.quick)
                    if spy is not None:
                        spy.wait(timeout=120)
                    samples.setdefault(sc.name, {}).setdefault(name, []).append(fig)
                    key = sc.primary if sc.primary in fig else "completed"
                    print(f"  {sc.name:<13} {name:<14} {key}={report.fmt(fig.get(key))} "
                          f"errors={fig.get('errors')} rows={report.fmt(fig.get('rows'))} "
                          f"({time.monotonic() - began:.1f} s)", flush=True)
                    time.sleep(1.5 if sc.kind == "open" else 0.1)
        summary = {sc: {name: scen.median_figures(v) for name, v in per.items()} for sc, per in samples.items()}
        targets = report.targets(summary, systems)
        own: dict[str, dict] = {}
        if any(sc.kind == "paired" for sc in plan):  # the budgets' features in process, with the systems idle
            with concurrent.futures.ThreadPoolExecutor(len(systems)) as pool:
                list(pool.map(lambda s: s.stop(), systems))
            print(f"bench: the budgets' features in process ({time.monotonic() - t_start:.0f} s in)", flush=True)
            own = in_process.measure(str(sysmod.VENV / "python"), quick=a.quick)
        budgets = report.budgets(summary, systems, own)
        lines = report.table(plan, systems, summary)
        lines += report.headline(systems, summary)
        lines += ["", "## Targets (same run)"]
        lines += [f"{t['status']:<5} {t['target']}: {t['detail']}" for t in targets]
        lines += report.budget_lines(budgets)
        quiet = (sysmod.NOT_BUILT, "not in this run")
        skipped = [s for s in systems if s.status != "ok" and not s.note.startswith(quiet)]
        if skipped:
            lines += ["", "## Skipped"] + [f"{s.label}: {s.note}" for s in skipped]
        elapsed = time.monotonic() - t_start
        load_after = loadavg()
        lines += ["", f"bench: {'quick' if a.quick else 'default'} run, {rounds} round(s) x {duration:g} s, "
                      f"{elapsed:.0f} s in all; load average {load_before} before, {load_after} after; "
                      f"results in {out_path}"]
        print("\n".join(lines))
        if not a.no_history and not a.scenarios and not a.systems:
            append_history(sysmod.BENCH / "history.jsonl", {
                "started_at": stamp, "kind": "quick" if a.quick else "default", "commit": info["corral_commit"],
                "loadavg": load_before, "ratios": report.history_ratios(summary),
                "cpu_ms_per_req_c64": {n: report.fig(summary, "json_c64", n, "cpu_ms_per_req")
                                       for n in report.HEADLINE_ORDER},
                "targets": {t["target"]: t["status"] for t in targets},
            })
        scen.write_json(out_path, {
            "started_at": stamp, "kind": "quick" if a.quick else "default", "rounds": rounds,
            "duration_s": duration, "elapsed_s": round(elapsed, 1), "machine": info,
            "loadavg_before": load_before, "loadavg_after": load_after, "budgets": budgets, "in_process": own,
            "systems": {s.name: {"label": s.label, "status": s.status, "note": s.note} for s in systems},
            "scenarios": {sc.name: sc.title for sc in plan},
            "summary": summary, "targets": targets, "samples": samples, "report": lines,
        })
        return 0
    finally:
        with concurrent.futures.ThreadPoolExecutor(len(systems)) as pool:  # each may take a graceful second
            list(pool.map(lambda s: s.stop(), systems))
        mock.terminate()
        mock.wait(10)


if __name__ == "__main__":
    sys.exit(main())
