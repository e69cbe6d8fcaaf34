# SPDX-License-Identifier: MIT
"""torchrun --rdzv-backend=ringstore with the real launcher on localhost.

Agents are ``python -m torch.distributed.run`` processes; the backend is found
through the installed package's ``torchrun.handlers`` entry point. Workers
(worker.py) init gloo over env:// and all_reduce; MASTER_ADDR/MASTER_PORT must
be the store server itself (no agent hosts a store). Every test runs against
ringstore and against PyTorch's own TCPStore server (conftest ``server``).

No test sleeps to "let things happen": each waits for observable state (worker
records, process exits) under generous bounds.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import kill_group, spawn

HERE = Path(__file__).resolve().parent
CONF = "last_call_timeout=2,join_timeout=90,keep_alive_interval=1,read_timeout=30"


class Job:
    def __init__(self, server, outdir: Path, run_id: str, nnodes: str, nproc: int,
                 target: int, max_restarts: int = 0):
        self.server, self.outdir, self.run_id = server, outdir, run_id
        self.nnodes, self.nproc, self.target, self.max_restarts = nnodes, nproc, target, max_restarts
        self.agents: list[tuple[subprocess.Popen, Path]] = []

    def start_agent(self) -> subprocess.Popen:
        i = len(self.agents)
        log = self.outdir / f"agent{i}.log"
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"):
            env.pop(k, None)
        args = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={self.nnodes}",
                f"--nproc-per-node={self.nproc}", "--rdzv-backend=ringstore",
                f"--rdzv-endpoint={self.server.endpoint}", f"--rdzv-id={self.run_id}",
                f"--rdzv-conf={CONF}", f"--max-restarts={self.max_restarts}",
                "--monitor-interval=0.2", str(HERE / "worker.py"), str(self.outdir),
                str(self.target)]
        with open(log, "w") as f:
            p = spawn(args, env=env, stdout=f, stderr=subprocess.STDOUT, cwd=str(self.outdir))
        self.agents.append((p, log))
        return p

    def records(self) -> list[dict]:
        out = []
        for f in self.outdir.glob("w-*.jsonl"):
            out += [json.loads(line) for line in f.read_text().splitlines() if line.strip()]
        return out

    def wait_records(self, pred, n: int, timeout: float) -> list[dict]:
        """Wait until n records satisfy pred (or an agent exits early)."""
        end = time.monotonic() + timeout
        while True:
            got = [r for r in self.records() if pred(r)]
            if len(got) >= n:
                return got
            dead = [(i, p.returncode) for i, (p, _) in enumerate(self.agents) if p.poll() is not None]
            assert not dead and time.monotonic() < end, (
                f"waiting for {n} records, have {len(got)}; exited agents {dead}\n" + self.logs())
            time.sleep(0.05)

    def wait_all(self, timeout: float = 120) -> list[int]:
        end = time.monotonic() + timeout
        rcs = []
        for p, _ in self.agents:
            try:
                rcs.append(p.wait(timeout=max(0.1, end - time.monotonic())))
            except subprocess.TimeoutExpired:
                rcs.append(None)
        return rcs

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.agents)


def check_final_round(job: Job, world: int):
    done = [r for r in job.records() if r["event"] == "done"]
    assert sorted(int(r["rank"]) for r in done) == list(range(world)), done
    for r in done:
        assert int(r["world_size"]) == world and r["sum"] == world * (world + 1) // 2, r
        # the workers' store is the rendezvous server itself: no agent hosts one
        assert (r["master_addr"], r["master_port"]) == (job.server.host, str(job.server.port)), r
        assert r["torchelastic_use_agent_store"] == "True", r
    assert sorted({int(r["group_rank"]) for r in done}) == list(range(world // job.nproc))


def final_round(st, run_id: str) -> int:
    """The last round of run_id that closed."""
    r = 0
    while st.check([f"rdzv/{run_id}/{r + 1}/done"]):
        r += 1
    return r


@pytest.mark.timeout_s(150)
def test_two_agents_two_workers_all_reduce(server, tmp_path):
    job = Job(server, tmp_path, "job2x2", "2", 2, target=4)
    job.start_agent()
    job.start_agent()
    assert job.wait_all() == [0, 0], job.logs()
    check_final_round(job, 4)
    st = server.client()
    # the round's agent keys live under the backend's per-job, per-round prefix
    assert st.check(["rdzv/job2x2/0/done", "rdzv/job2x2/0/agent/torchelastic/role_info/0"])
    assert st.get("rdzv/job2x2/0/done") == b"2"
    assert st.check(["rdzv/job2x2/closed"])  # the agents' shutdown() closed it
    # the workers' env:// store had the per-round prefix (ringstore._worker_hook)
    assert st.check([f"rdzv/job2x2/0/worker/default_pg/0//marker/{r}" for r in range(4)])
    assert {r["ringstore_worker_prefix"] for r in job.records()} == {"rdzv/job2x2/0/worker"}


@pytest.mark.timeout_s(180)
def test_elastic_scale_up(server, tmp_path):
    """--nnodes=2:3: a third agent arrives after round 0 formed with 2; the
    running agents see num_nodes_waiting() > 0, restart, and every worker of the
    next round sees world size 6."""
    job = Job(server, tmp_path, "jobup", "2:3", 2, target=6, max_restarts=3)
    job.start_agent()
    job.start_agent()
    first = job.wait_records(lambda r: r["event"] == "up", 4, 120)
    assert {int(r["world_size"]) for r in first} == {4}, first
    job.start_agent()
    rcs = job.wait_all()
    assert rcs == [0, 0, 0], job.logs()
    check_final_round(job, 6)
    st = server.client()
    assert st.get("rdzv/jobup/0/done") == b"2"
    # normally round 1 has all 3; if a restarting agent came later than the last
    # call, round 1 closed with 2 and round 2 then had all 3
    last = final_round(st, "jobup")
    assert last >= 1 and st.get(f"rdzv/jobup/{last}/done") == b"3"
    assert st.check([f"rdzv/jobup/{last}/worker/default_pg/0//marker/{r}" for r in range(6)])


@pytest.mark.timeout_s(180)
def test_killed_agent_survivors_finish(server, tmp_path):
    """--nnodes=2:3 --max-restarts=1: one of 3 agents is SIGKILLed with its
    workers; the survivors' collectives fail, they restart, re-rendezvous as 2
    nodes and finish."""
    job = Job(server, tmp_path, "jobkill", "2:3", 2, target=4, max_restarts=1)
    for _ in range(3):
        job.start_agent()
    up = job.wait_records(lambda r: r["event"] == "up", 6, 120)
    assert {int(r["world_size"]) for r in up} == {6}, up
    victim = next(p for p, _ in job.agents if p.pid == up[0]["ppid"])
    workers = [r["pid"] for r in up if r["ppid"] == victim.pid]
    assert len(workers) == 2, up
    kill_group(victim)  # the agent; its workers run in their own sessions
    for pid in workers:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    victim.wait()
    survivors = [p for p, _ in job.agents if p is not victim]
    for p in survivors:
        assert p.wait(timeout=150) == 0, job.logs()
    check_final_round(job, 4)
    st = server.client()
    # only the 2 survivors exist, so round 1 closes with exactly them
    assert final_round(st, "jobkill") == 1 and st.get("rdzv/jobkill/1/done") == b"2"


@pytest.mark.timeout_s(120)
def test_closed_rendezvous_rejects_late_node(server, tmp_path):
    """A finished job's agents close the rendezvous (shutdown()); a node that
    arrives afterwards fails with RendezvousClosedError."""
    job = Job(server, tmp_path, "jobclosed", "1", 1, target=1)
    job.start_agent()
    assert job.wait_all() == [0], job.logs()
    late = job.start_agent()
    rc = late.wait(timeout=60)
    assert rc != 0
    assert "RendezvousClosedError" in job.agents[1][1].read_text(), job.logs()
