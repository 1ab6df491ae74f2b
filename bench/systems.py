"""The systems under test: each a subprocess on its own loopback port, in front of the same mock.

A system that cannot start (not installed, or Corral rejecting a setting a parallel branch has not
merged yet) is SKIPPED with the reason, and every scenario runs without it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
VENV = ROOT / ".venv" / "bin"
LITELLM_VENV = BENCH / ".venv-litellm" / "bin"
PORTKEY_DIR = BENCH / "portkey"  # package.json + lock committed; node_modules installed by bench/run
PORTKEY_SCRIPT = PORTKEY_DIR / "node_modules" / "@portkey-ai" / "gateway" / "build" / "start-server.js"

# Budget systems: Corral's default chain plus one feature, each from bench/configs/<name>.toml (``{MOCK}``
# there is the mock's URL; a file with its own ``[providers.openai]`` replaces the default one). A
# feature not built yet has no file (or Corral refuses its keys): its budget row says
# "n/a (feature not built)". To fill one in, add the file (and a path/model in build() if it needs one).
BUDGET_SYSTEMS = {
    "corral-unified": "unified.toml",
    "corral-keys": "keys.toml",
    "corral-otel": "otel.toml",
    "corral-hardening": "hardening.toml",
}
NOT_BUILT = "n/a (feature not built)"

# The model names the scenarios use (bench/mock.py reads latency/chunking from them); LiteLLM needs
# each one listed.
MODELS = ("bench", "bench-l300", "bench-d5-n10", "bench-d100-n30", "bench-d0-n4")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree(pid: int) -> list[int]:
    """``pid`` and its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if p in out:
            continue
        out.append(p)
        try:
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, ValueError):
            pass
    return out


def cpu_seconds(pid: int | None) -> float | None:
    """User + system CPU time of ``pid`` and its descendants (/proc/<pid>/stat)."""
    if pid is None:
        return None
    ticks = 0
    for p in tree(pid):
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rpartition(")")[2].split()
            ticks += int(fields[11]) + int(fields[12])  # utime, stime
        except (OSError, ValueError, IndexError):
            continue
    return ticks / os.sysconf("SC_CLK_TCK")


def cpu_ns(pid: int | None) -> int | None:
    """Nanoseconds on CPU of every live thread of ``pid`` and its descendants (/proc/.../schedstat):
    precise enough to charge single requests, where /proc/<pid>/stat counts 10 ms ticks."""
    if pid is None:
        return None
    total = 0
    for p in tree(pid):
        try:
            tasks = list(Path(f"/proc/{p}/task").iterdir())
        except OSError:
            continue
        for task in tasks:
            try:  # a thread may end between the listing and the read
                total += int((task / "schedstat").read_text().split()[0])
            except (OSError, ValueError, IndexError):
                continue
    return total


def rss_mb(pid: int) -> float | None:
    """VmRSS of ``pid`` and its descendants, in MB (/proc)."""
    total_kb = 0
    pids = [pid]
    seen: set[int] = set()
    while pids:
        p = pids.pop()
        if p in seen:
            continue
        seen.add(p)
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total_kb += int(line.split()[1])
            for task in Path(f"/proc/{p}/task").iterdir():
                children = (task / "children").read_text().split()
                pids += [int(c) for c in children]
        except (OSError, ValueError):
            continue
    return round(total_kb / 1024, 1) if seen else None


@dataclass
class System:
    name: str
    label: str
    path: str  # request path of a chat completion through this system
    cmd: list[str] | None = None  # None: nothing to start (direct)
    env: dict[str, str] = field(default_factory=dict)
    db: Path | None = None  # Corral's SQLite file (rows recorded)
    port: int = 0
    proc: subprocess.Popen | None = None
    status: str = "pending"  # ok | skipped
    note: str = ""
    log: Path | None = None
    startup_timeout: float = 30.0
    headers: dict[str, str] = field(default_factory=dict)  # sent with every request (Portkey's routing)
    model_prefix: str = ""  # put before the scenario's model name ("anthropic/" on the unified endpoint)
    prepare: Callable[[System], None] | None = None  # run before the command (a gateway key to create)

    def model(self, name: str) -> str:
        return self.model_prefix + name

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def start(self, workdir: Path) -> bool:
        if self.cmd is None:
            self.status = "ok"
            return True
        self.log = workdir / f"{self.name}.log"
        if self.prepare is not None:
            try:
                self.prepare(self)
            except (OSError, subprocess.SubprocessError, ValueError, KeyError) as e:
                self.skip(f"could not prepare: {e}")
                return False
        env = {**os.environ, **self.env, "PYTHONUNBUFFERED": "1", "NO_PROXY": "*"}
        for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
            env.pop(var, None)
        with self.log.open("wb") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        last = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = self.log.read_text(errors="replace").strip().splitlines()[-6:]
                tail_text = " | ".join(tail)
                built = self.name not in BUDGET_SYSTEMS or "nknown" not in tail_text
                self.skip(("" if built else NOT_BUILT + ": ")
                          + f"exited with {self.proc.returncode} at start: " + tail_text)
                return False
            ok, last = probe(self.port, self.path, self.headers, self.model("bench"))
            if ok:
                self.status = "ok"
                return True
            time.sleep(0.25)
        self.stop()
        self.skip(f"no answer within {self.startup_timeout:.0f}s (last: {last})")
        return False

    def skip(self, reason: str) -> None:
        self.status, self.note = "skipped", reason[:600]
        self.proc = None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def rows(self) -> int | None:
        """Rows in Corral's flows table (None for other systems)."""
        if self.db is None or not self.db.exists():
            return None
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM flows").fetchone()[0]
        except sqlite3.Error:
            return None
        finally:
            con.close()

    def cache_hits(self) -> int | None:
        if self.db is None or not self.db.exists():
            return None
        con = sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10)
        try:
            return con.execute("SELECT count(*) FROM flows WHERE cache = 'hit'").fetchone()[0]
        except sqlite3.Error:
            return None
        finally:
            con.close()

    def wait_rows(self, expected: int, timeout: float = 10.0) -> int | None:
        """Row count once it reaches ``expected`` and stops moving (the writer batches every 50 ms)."""
        deadline = time.monotonic() + timeout
        last = self.rows()
        while time.monotonic() < deadline:
            time.sleep(0.2)
            now = self.rows()
            if now is not None and now == last and now >= expected:
                return now
            last = now
        return last


def probe(port: int, path: str, headers: dict[str, str] | None = None, model: str = "bench") -> tuple[bool, str]:
    """One real chat completion through the system: True once it answers 200."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "ping"}]}).encode()
    headers = headers or {}
    extra = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    if not any(k.lower() == "authorization" for k in headers):
        extra = "authorization: Bearer sk-bench-not-a-real-key\r\n" + extra
    req = (f"POST {path} HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
           f"content-length: {len(body)}\r\n{extra}connection: close\r\n\r\n").encode() + body
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(req)
            data = b""
            while b"\r\n" not in data:
                more = s.recv(4096)
                if not more:
                    break
                data += more
        line = data.split(b"\r\n", 1)[0].decode("latin-1")
        return (" 200 " in line + " "), line
    except OSError as e:
        return False, str(e)


def corral_toml(mock_port: int, extra: str = "") -> str:
    mock = f"http://127.0.0.1:{mock_port}"
    extra = extra.replace("{MOCK}", mock)
    provider = "" if "[providers.openai]" in extra else f'[providers.openai]\nupstream = "{mock}"\n\n'
    return f'{provider}[storage]\nbodies = "full"\n\n{extra}'


def build(mock_port: int, workdir: Path, wanted: set[str] | None = None) -> list[System]:
    """Every system, in the order runs interleave (A B C A B C ...)."""
    mock = f"http://127.0.0.1:{mock_port}"
    systems = [System("direct", "direct (mock)", "/v1/chat/completions", port=mock_port)]

    def mitm(name: str, label: str, script: str | None, *options: str) -> System:
        port = free_port()
        cmd = [str(VENV / "mitmdump"), "-q", "--mode", f"reverse:{mock}@{port}", "--listen-host", "127.0.0.1",
               "--set", f"confdir={workdir / (name + '-certs')}"]  # own CA each: they start at once
        for opt in options:
            cmd += ["--set", opt]
        if script:
            cmd += ["-s", str(BENCH / script)]
        return System(name, label, "/v1/chat/completions", cmd, port=port)

    # The baseline is the engine at its best: mitmdump's default options (eager connection strategy).
    systems.append(mitm("mitm", "mitmdump (defaults)", None))
    systems.append(mitm("mitm-lazy", "mitmdump (lazy connect)", None, "connection_strategy=lazy"))
    systems.append(mitm("mitm-tee", "mitmdump + SSE tee", "tee.py"))

    def corral(name: str, label: str, extra_file: str | None, workers: int = 1,
               path: str = "/openai/v1/chat/completions", model_prefix: str = "") -> System:
        port = free_port()
        conf = workdir / f"{name}.toml"
        extra = (BENCH / "configs" / extra_file).read_text() if extra_file else ""
        # Only the default system runs a viewer (on a free port: a developer's own Corral may have 8082).
        viewer = f"127.0.0.1:{free_port()}" if name == "corral" else ""
        extra = f'[viewer]\nlisten = "{viewer}"\n\n' + extra
        conf.write_text(corral_toml(mock_port, extra))
        db = workdir / f"{name}.db"
        cmd = [str(VENV / "corral"), "start", "--listen", f"127.0.0.1:{port}", "--db", f"sqlite:///{db}",
               "--config", str(conf), "--certs", str(workdir / f"{name}-certs"), "--workers", str(workers)]
        # eleven systems start at once: on a loaded box two workers have taken more than 30 s
        return System(name, label, path, cmd, db=db, port=port, model_prefix=model_prefix, startup_timeout=90.0)

    systems.append(corral("corral", "Corral (default chain)", None))
    systems.append(corral("corral-w2", "Corral --workers 2", None, workers=2))
    systems.append(corral("corral-cache", "Corral, cache hits", "cache.toml"))
    systems.append(corral("corral-limits", "Corral, limits not hit", "limits.toml"))
    for name, file in BUDGET_SYSTEMS.items():
        if (BENCH / "configs" / file).exists():
            unified = name == "corral-unified"  # OpenAI-shaped request at the root, translated to Anthropic
            system = corral(name, f"Corral + {name.removeprefix('corral-')}", file,
                            path="/v1/chat/completions" if unified else "/openai/v1/chat/completions",
                            model_prefix="anthropic/" if unified else "")
            if name == "corral-keys":
                system.prepare = create_gateway_key
            if name == "corral-otel":  # export each run's spans within the run (the SDK's default is 5 s)
                system.env["OTEL_BSP_SCHEDULE_DELAY"] = "200"
            systems.append(system)
        else:
            missing = System(name, f"Corral + {name.removeprefix('corral-')}", "/openai/v1/chat/completions")
            missing.skip(f"{NOT_BUILT}: no bench/configs/{file}")
            systems.append(missing)

    port = free_port()
    portkey = System("portkey", "Portkey gateway (Node)", "/v1/chat/completions",
                     ["node", "--import", (PORTKEY_DIR / "loopback.mjs").as_uri(), str(PORTKEY_SCRIPT),
                      f"--port={port}", "--headless"],
                     env={"NODE_ENV": "production"}, port=port,
                     headers={"x-portkey-provider": "openai", "x-portkey-custom-host": f"{mock}/v1"})
    if not PORTKEY_SCRIPT.exists():
        portkey.cmd = None
        portkey.skip("@portkey-ai/gateway is not installed in bench/portkey (see bench/run output)")
    systems.append(portkey)

    port = free_port()
    conf = workdir / "litellm.yaml"
    conf.write_text(litellm_yaml(mock_port))
    litellm = System("litellm", "LiteLLM proxy (1 worker)", "/v1/chat/completions",
                     [str(LITELLM_VENV / "litellm"), "--config", str(conf), "--host", "127.0.0.1",
                      "--port", str(port), "--num_workers", "1"],
                     env={"LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_LOG": "ERROR",
                          "LITELLM_MODE": "PRODUCTION", "LITELLM_TELEMETRY": "False",
                          # the bench clients' bearer token doubles as the proxy's master key
                          "LITELLM_MASTER_KEY": "sk-bench-not-a-real-key"},
                     port=port, startup_timeout=120.0)
    if not (LITELLM_VENV / "litellm").exists():
        litellm.cmd = None
        litellm.skip("litellm is not installed in bench/.venv-litellm (see bench/run output)")
    systems.append(litellm)
    if wanted:
        for s in systems:
            if s.name not in wanted and s.status != "skipped":
                s.cmd = None
                s.skip("not in this run (--systems, or no scenario of this mode uses it)")
    return systems


def create_gateway_key(system: System) -> None:
    """A gateway key with a budget far above what the bench spends, in the system's own database; every
    request of the system carries it (the config has ``[keys] required = true``)."""
    assert system.cmd is not None
    conf = system.cmd[system.cmd.index("--config") + 1]
    out = subprocess.run([str(VENV / "corral"), "keys", "create", "--config", conf, "--db", f"sqlite:///{system.db}",
                          "--name", "bench", "--budget-usd", "1000000", "--period", "day", "--json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60, check=True)
    system.headers = {"Authorization": f"Bearer {json.loads(out.stdout)['key']}"}


def litellm_yaml(mock_port: int) -> str:
    lines = ["model_list:"]
    for model in MODELS:
        lines += [f"  - model_name: {model}", "    litellm_params:", f"      model: openai/{model}",
                  f"      api_base: http://127.0.0.1:{mock_port}/v1", "      api_key: sk-bench-not-a-real-key"]
    lines += ["litellm_settings:", "  telemetry: false", "  set_verbose: false", "  drop_params: true",
              "general_settings:", "  disable_spend_logs: true"]
    return "\n".join(lines) + "\n"
