#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""One rendezvous round of N simulated nodes: the ringstore backend vs torch's c10d.

Usage: bench/rdzv_bench.py [--n 100,1000,4000,10000] [--c10d-n 100,250,500,1000,4000]
                           [--procs 16] [--out bench/rdzv] [--c10d-limit 300]
                           [--ringstore PATH] [--threads 1]

Each simulated node is one rendezvous handler with its own TCPStore client
connection, run as a thread; the N threads are spread over --procs processes
(fd limits, the GIL). Every handler connects first; then all are released at
once and each calls next_rendezvous() (min_nodes = max_nodes = N, so the round
closes when the last node arrives). Measured per run:

  time     from the release to the last node's RendezvousInfo
  last arrival  (ringstore backend) from the release to the last node's
           arrival ADD: the simulation's own cost of starting N Python nodes
  requests, bytes received by the server during the round, from ringstore's
           /metrics (--control-port 0); not available for PyTorch's server
  cpu      server CPU seconds (utime+stime from /proc/PID/stat) over the round

Backends x servers: ringstore and c10d (DynamicRendezvousHandler over
C10dRendezvousBackend), each against ringstore (--threads reactors, default 1)
and against PyTorch's own libuv TCPStore server (scripts/torch_store_server.py).
A run that does not finish within --c10d-limit seconds is stopped and reported
as such; larger N are then skipped for that pair. Results: OUT/results.md
(markdown table), OUT/results.json and OUT/rdzv.png (matplotlib, if installed).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CLK = os.sysconf("SC_CLK_TCK")


# ------------------------------------------------------------------ child side
def child(args) -> int:
    import resource
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    threading.stack_size(512 * 1024)
    sys.path.insert(0, str(ROOT / "python"))
    from torch.distributed.elastic.rendezvous import RendezvousParameters

    host, port = args.endpoint.rsplit(":", 1)
    n, count = args.n, args.count
    ready = threading.Barrier(count + 1)
    go = threading.Event()
    ends, errors = [], []
    lock = threading.Lock()

    def node():
        try:
            if args.backend == "ringstore":
                from ringstore.rendezvous import RingstoreRendezvousHandler

                class Timed(RingstoreRendezvousHandler):
                    """Notes when this node's arrival ADD returned."""

                    def _call(self, op, *a, **kw):
                        ret = super()._call(op, *a, **kw)
                        if op == "add" and a[1] == 1:
                            self.arrived = time.time()
                        return ret

                params = RendezvousParameters(
                    "ringstore", args.endpoint, args.run_id, n, n, local_addr="127.0.0.1",
                    last_call_timeout="600", join_timeout="900", read_timeout="900",
                    keep_alive_interval="30",
                    # A store that keeps every write (no restart here):
                    # the round's time without the durability wait.
                    commit_wait="0")
                h = Timed(params)
            else:
                from torch.distributed.elastic.rendezvous.c10d_rendezvous_backend import \
                    create_backend
                from torch.distributed.elastic.rendezvous.dynamic_rendezvous import \
                    create_handler
                params = RendezvousParameters(
                    "c10d", args.endpoint, args.run_id, n, n, local_addr="127.0.0.1",
                    is_host="false", read_timeout="900", join_timeout="900")
                backend, store = create_backend(params)
                h = create_handler(store, backend, params)
        except Exception as e:  # noqa: BLE001 - reported to the parent
            with lock:
                errors.append(f"setup: {e!r}")
            ready.wait()
            return
        ready.wait()
        go.wait()
        try:
            info = h.next_rendezvous()
            with lock:
                ends.append((time.time(), info.rank, info.world_size,
                             getattr(h, "arrived", 0.0)))
        except Exception as e:  # noqa: BLE001
            with lock:
                errors.append(f"rdzv: {e!r}")
        h._keep = h  # keep connections open until the process exits

    threads = [threading.Thread(target=node, daemon=True) for _ in range(count)]
    for t in threads:
        t.start()
    ready.wait()
    print("ready", len(errors), flush=True)
    if sys.stdin.readline().strip() != "go":
        return 1
    go.set()
    for t in threads:
        t.join()
    print(json.dumps({"end": max((e[0] for e in ends), default=0.0),
                      "arrived": max((e[3] for e in ends), default=0.0),
                      "ranks": sorted(e[1] for e in ends),
                      "worlds": sorted({e[2] for e in ends}),
                      "errors": errors[:5], "nerrors": len(errors)}), flush=True)
    sys.stdin.readline()  # hold the connections until the parent has read the metrics
    return 0


# ----------------------------------------------------------------- parent side
class Server:
    def __init__(self, kind: str, args):
        self.kind = kind
        if kind == "ringstore":
            cmd = [args.ringstore, "--port", "0", "--bind", "127.0.0.1", "--control-port", "0",
                   "--threads", str(args.threads), "--log-level", "warn"]
        else:
            cmd = [sys.executable, str(ROOT / "scripts" / "torch_store_server.py"),
                   "--host", "127.0.0.1", "--port", "0"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, start_new_session=True)
        line = self.proc.stdout.readline()
        m = re.search(r"listening on (\S+):(\d+)", line)
        if not m:
            raise RuntimeError(f"{kind} server did not start: {line!r}")
        self.endpoint = f"127.0.0.1:{m.group(2)}"
        self.control = None
        if kind == "ringstore":
            m = re.search(r"control on (\S+)", self.proc.stdout.readline())
            self.control = m.group(1)

    def cpu(self) -> float:
        f = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / CLK

    def metrics(self) -> dict[str, float]:
        if not self.control:
            return {}
        text = urllib.request.urlopen(f"http://{self.control}/metrics", timeout=30).read().decode()
        out = {"requests": 0.0}
        for line in text.splitlines():
            if line.startswith("ringstore_requests_total{"):
                out["requests"] += float(line.split()[-1])
            elif line.startswith("ringstore_received_bytes_total "):
                out["bytes_in"] = float(line.split()[-1])
            elif line.startswith("ringstore_sent_bytes_total "):
                out["bytes_out"] = float(line.split()[-1])
        return out

    def stop(self):
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def readline(p: subprocess.Popen, deadline: float) -> str | None:
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        r, _, _ = select.select([p.stdout], [], [], min(left, 1.0))
        if r:
            return p.stdout.readline()
        if p.poll() is not None:
            return ""


def run_one(backend: str, server_kind: str, n: int, args) -> dict:
    srv = Server(server_kind, args)
    procs = min(args.procs, n)
    kids = []
    res = {"backend": backend, "server": server_kind, "n": n}
    try:
        for i in range(procs):
            count = n // procs + (1 if i < n % procs else 0)
            kids.append(subprocess.Popen(
                [sys.executable, __file__, "--child", "--backend", backend, "--endpoint",
                 srv.endpoint, "--run-id", f"bench-{backend}-{n}", "--n", str(n),
                 "--count", str(count)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                text=True, start_new_session=True))
        setup_deadline = time.monotonic() + 600
        for k in kids:
            line = readline(k, setup_deadline)
            if not line or not line.startswith("ready") or line.split()[1] != "0":
                raise RuntimeError(f"a client process failed to connect: {line!r}")
        m0, c0 = srv.metrics(), srv.cpu()
        t0 = time.time()
        for k in kids:
            k.stdin.write("go\n")
            k.stdin.flush()
        deadline = time.monotonic() + args.c10d_limit
        outs = []
        for k in kids:
            line = readline(k, deadline)
            if line is None:
                res.update(status=f"did not finish in {args.c10d_limit:.0f} s",
                           cpu=srv.cpu() - c0)
                return res
            outs.append(json.loads(line))
        t1 = max(o["end"] for o in outs)
        c1, m1 = srv.cpu(), srv.metrics()
        nerr = sum(o["nerrors"] for o in outs)
        ranks = sorted(r for o in outs for r in o["ranks"])
        worlds = {w for o in outs for w in o["worlds"]}
        ok = nerr == 0 and ranks == list(range(n)) and worlds == {n}
        res.update(status="ok" if ok else f"WRONG: {nerr} errors {[o['errors'] for o in outs]}",
                   time=t1 - t0, cpu=c1 - c0)
        if backend == "ringstore":
            res["last_arrival"] = max(o["arrived"] for o in outs) - t0
        if m0:
            res.update(requests=m1["requests"] - m0["requests"],
                       bytes_in=m1["bytes_in"] - m0["bytes_in"],
                       bytes_out=m1["bytes_out"] - m0["bytes_out"])
        return res
    finally:
        for k in kids:
            try:
                os.killpg(k.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            k.wait()
        srv.stop()


def fmt_table(results: list[dict]) -> str:
    lines = ["| backend | server | N | time to last RendezvousInfo (s) | last arrival (s) | requests | "
             "requests/node | bytes received | bytes/node | bytes sent/node | server CPU (s) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        n = r["n"]
        if r["status"] != "ok":
            lines.append(f"| {r['backend']} | {r['server']} | {n} | {r['status']} | | | | | | | "
                         f"{r.get('cpu', 0):.2f} |")
            continue
        req = r.get("requests")
        row = [r["backend"], r["server"], str(n), f"{r['time']:.2f}",
               f"{r['last_arrival']:.2f}" if "last_arrival" in r else "n/a"]
        if req is not None:
            row += [f"{req:.0f}", f"{req / n:.1f}", f"{r['bytes_in']:.0f}",
                    f"{r['bytes_in'] / n:.0f}", f"{r['bytes_out'] / n:.0f}"]
        else:
            row += ["n/a"] * 5
        row.append(f"{r['cpu']:.2f}")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> bool:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for backend in ("ringstore", "c10d"):
        for server in ("ringstore", "torch"):
            pts = [r for r in results if r["backend"] == backend and r["server"] == server
                   and r["status"] == "ok"]
            if pts:
                ax1.plot([r["n"] for r in pts], [r["time"] for r in pts], "o-",
                         label=f"{backend} backend / {server} server")
            pts = [r for r in pts if "bytes_in" in r]
            if pts:
                ax2.plot([r["n"] for r in pts], [r["bytes_in"] / r["n"] for r in pts], "o-",
                         label=f"{backend} backend / {server} server")
    for ax, title in ((ax1, "time to the last node's RendezvousInfo (s)"),
                      (ax2, "bytes the server received per node")):
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("nodes N (one round)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return True


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--backend", default="ringstore", help=argparse.SUPPRESS)
    ap.add_argument("--endpoint", help=argparse.SUPPRESS)
    ap.add_argument("--run-id", help=argparse.SUPPRESS)
    ap.add_argument("--count", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--n", default="100,1000,4000,10000", help="N for the ringstore backend")
    ap.add_argument("--c10d-n", default="100,250,500,1000,4000",
                    help="N for the c10d backend (it is O(N^2); it stops at the first N "
                         "that does not finish)")
    ap.add_argument("--procs", type=int, default=16, help="client processes (default 16)")
    ap.add_argument("--c10d-limit", type=float, default=300,
                    help="seconds a round may take before it is stopped (default 300)")
    ap.add_argument("--backends", default="ringstore,c10d")
    ap.add_argument("--servers", default="ringstore,torch")
    ap.add_argument("--threads", type=int, default=1, help="ringstore reactor threads")
    ap.add_argument("--ringstore", default=str(Path(os.environ.get("RS_BUILD_DIR")
                                                    or ROOT / "build") / "bin" / "ringstore"))
    ap.add_argument("--out", default=str(ROOT / "bench" / "rdzv"))
    args = ap.parse_args()
    if args.child:
        args.n = int(args.n)
        return child(args)

    # SIGTERM/SIGINT unwind through run_one's cleanup (client processes, server)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: sys.exit(130))
    load0 = os.getloadavg()[0]
    ns = {"ringstore": [int(x) for x in args.n.split(",")],
          "c10d": [int(x) for x in args.c10d_n.split(",")]}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    for backend in args.backends.split(","):
        for server in args.servers.split(","):
            for n in ns[backend]:
                r = run_one(backend, server, n, args)
                results.append(r)
                print(json.dumps(r), flush=True)
                if r["status"] != "ok":
                    break  # larger N would not finish either
    (out / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    table = fmt_table(results)
    cmd = "bench/rdzv_bench.py " + " ".join(sys.argv[1:])
    (out / "results.md").write_text(
        f"# One rendezvous round, N simulated nodes\n\n`{cmd.strip()}` on "
        f"{os.cpu_count()} CPUs, ringstore with {args.threads} reactor thread(s), "
        f"{args.procs} client processes; 1-minute load average {load0:.1f} at the "
        f"start, {os.getloadavg()[0]:.1f} at the end (the machine is shared).\n\n{table}\n")
    print(table)
    if plot(results, out / "rdzv.png"):
        print(f"plot: {out / 'rdzv.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
