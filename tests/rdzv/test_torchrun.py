# SPDX-License-Identifier: MIT
"""torchrun --rdzv-backend=ringstore with the real launcher on localhost.

Agents are ``python -m torch.distributed.run`` processes; the backend is found
through the installed package's ``torchrun.handlers`` entry point. Workers
(worker.py) init gloo over env:// and all_reduce; MASTER_ADDR/MASTER_PORT must
be the store server itself (no agent hosts a store). Every test runs against
ringstore and against PyTorch's own TCPStore server (conftest ``server``); the
store-restart tests put a StoreProxy (proxy.py) in front of it and take the
store away mid-training.

What a round was is read from the workers' records (their per-round key
prefix, GROUP_WORLD_SIZE) rather than from the store: the agents' shutdown()
collects the run's keys, and the tests check that it does.

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
CONF = ("last_call_timeout=2,join_timeout=90,keep_alive_interval=1,read_timeout=30,"
        "commit_wait=0.5")
# what shutdown() leaves of a run: O(1) keys, however many rounds it had
LEFT_AFTER_SHUTDOWN = {"closed", "round", "gc", "gclease"}


class Job:
    def __init__(self, server, outdir: Path, run_id: str, nnodes: str, nproc: int,
                 target: int, max_restarts: int = 0, mode: str = "plain"):
        self.server, self.outdir, self.run_id = server, outdir, run_id
        self.nnodes, self.nproc, self.target, self.max_restarts = nnodes, nproc, target, max_restarts
        self.mode = mode
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
                str(self.target), self.mode]
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

    def wait_logs(self, text: str, timeout: float) -> None:
        """Wait until every agent's log contains text."""
        end = time.monotonic() + timeout
        while not all(text in log.read_text() for _, log in self.agents):
            dead = [(i, p.returncode) for i, (p, _) in enumerate(self.agents)
                    if p.poll() is not None]
            assert not dead and time.monotonic() < end, (
                f"waiting for {text!r} in every agent log; exited agents {dead}\n" + self.logs())
            time.sleep(0.05)

    def logs(self) -> str:
        return "\n".join(f"--- {log.name}\n{log.read_text()[-3000:]}" for _, log in self.agents)


def round_of(rec: dict) -> int:
    """The rendezvous round of a worker record, from its key prefix."""
    return int(rec["ringstore_worker_prefix"].split("/")[2])


def run_keys(st, run_id: str) -> set[str]:
    base = f"rdzv/{run_id}/"
    return {k[len(base):] for k in st.list_keys() if k.startswith(base)}


def check_final_round(job: Job, world: int) -> int:
    """The last round's workers: ranks 0..world-1, one round; returns it."""
    done = [r for r in job.records() if r["event"] == "done"]
    assert sorted(int(r["rank"]) for r in done) == list(range(world)), done
    for r in done:
        assert int(r["world_size"]) == world and r["sum"] == world * (world + 1) // 2, r
        # the workers' store is the rendezvous server itself: no agent hosts one
        assert (r["master_addr"], r["master_port"]) == (job.server.host, str(job.server.port)), r
        assert r["torchelastic_use_agent_store"] == "True", r
    assert sorted({int(r["group_rank"]) for r in done}) == list(range(world // job.nproc))
    assert {int(r["group_world_size"]) for r in done} == {world // job.nproc}, done
    rounds = {round_of(r) for r in done}
    assert len(rounds) == 1, done
    return rounds.pop()


@pytest.mark.timeout_s(150)
def test_two_agents_two_workers_all_reduce(server, tmp_path):
    job = Job(server, tmp_path, "job2x2", "2", 2, target=4)
    job.start_agent()
    job.start_agent()
    assert job.wait_all() == [0, 0], job.logs()
    assert check_final_round(job, 4) == 0
    ups = [r for r in job.records() if r["event"] == "up"]
    # the workers' env:// store had the per-round prefix (ringstore._worker_hook),
    # and the agents' keys (RendezvousInfo.store) their per-round prefix
    assert all(r["marker_under_prefix"] and r["role_info_under_prefix"] for r in ups), ups
    assert {r["ringstore_worker_prefix"] for r in job.records()} == {"rdzv/job2x2/0/worker"}
    # the agents' shutdown() closed the rendezvous, and the last one out
    # collected every key of its rounds
    assert run_keys(server.client(), "job2x2") == LEFT_AFTER_SHUTDOWN


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
    assert {round_of(r) for r in first} == {0}
    # normally round 1 has all 3; if a restarting agent came later than the last
    # call, round 1 closed with 2 and round 2 then had all 3
    assert check_final_round(job, 6) >= 1
    ups = [r for r in job.records() if r["event"] == "up"]
    assert all(r["marker_under_prefix"] and r["role_info_under_prefix"] for r in ups), ups
    assert run_keys(server.client(), "jobup") == LEFT_AFTER_SHUTDOWN


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
    # only the 2 survivors exist, so round 1 closes with exactly them
    assert check_final_round(job, 4) == 1


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


@pytest.mark.timeout_s(240)
def test_store_restart_workers_fail_and_next_round_forms(proxied, tmp_path):
    """The store goes away mid-training (every connection reset, new ones
    refused) while the workers ADD through it every step. Their stock
    clients cannot reconnect: they fail, torchrun restarts them, and the next
    round forms through the store once it is back; the agents' own
    connections (rendezvous, heartbeats, the agents' store) reconnect, and
    every agent exits 0 with every worker of the last round finished."""
    job = Job(proxied, tmp_path, "jobrestart", "2", 2, target=4, max_restarts=3, mode="store")
    job.start_agent()
    job.start_agent()
    first = job.wait_records(lambda r: r["event"] == "up", 4, 120)
    assert {round_of(r) for r in first} == {0}
    proxied.proxy.down()
    job.wait_records(lambda r: r["event"] == "store_failed", 4, 60)
    proxied.proxy.up()
    assert job.wait_all(150) == [0, 0], job.logs()
    last = check_final_round(job, 4)
    assert last >= 1  # round numbers go on from the store's
    done = [r for r in job.records() if r["event"] == "done"]
    assert all(int(r["torchelastic_restart_count"]) >= 1 for r in done), done
    assert "reconnected" in job.logs()
    assert run_keys(proxied.direct(), "jobrestart") == LEFT_AFTER_SHUTDOWN


@pytest.mark.timeout_s(240)
def test_store_restart_agents_survive_while_workers_train(proxied, tmp_path):
    """Workers that do not touch the store after init train on through a
    store restart: the agents' heartbeats reconnect instead of stopping, and
    torchrun's exit barrier (on the agents' reconnecting store) completes."""
    job = Job(proxied, tmp_path, "jobsurvive", "2", 2, target=4, mode="release")
    job.start_agent()
    job.start_agent()
    job.wait_records(lambda r: r["event"] == "up", 4, 120)
    proxied.proxy.down()
    job.wait_logs("connection lost", 60)  # every agent's heartbeat noticed
    proxied.proxy.up()
    job.wait_logs("reconnected", 90)
    (tmp_path / "release").touch()
    assert job.wait_all(120) == [0, 0], job.logs()
    assert check_final_round(job, 4) == 0
    done = [r for r in job.records() if r["event"] == "done"]
    assert {r["torchelastic_restart_count"] for r in done} == {"0"}, done
    assert "Error waiting on exit barrier" not in job.logs()
    assert run_keys(proxied.direct(), "jobsurvive") == LEFT_AFTER_SHUTDOWN


def _start_durable(binary: Path, port: int, data: Path, log: Path) -> subprocess.Popen:
    """ringstore on @port with the write log in @data (its default --fsync
    everysec), once it listens."""
    with open(log, "ab") as err:
        p = spawn([str(binary), "--port", str(port), "--bind", "127.0.0.1", "--data-dir",
                   str(data)], stdout=subprocess.PIPE, stderr=err,
                  stdin=subprocess.DEVNULL, text=True)
    line = p.stdout.readline()
    assert line.startswith("ringstore listening on "), (line, log.read_text()[-2000:])
    return p


@pytest.mark.timeout_s(300)
def test_store_sigkill_and_restart_with_its_data_dir(server, tmp_path):
    """issue 30's job: the workers ADD through the store every step; ringstore
    is SIGKILLed mid-training and started again on the same port with the same
    data dir, at the default --fsync everysec (so it may come back without its
    last writes). The workers' stock clients fail, torchrun restarts them, the
    next round forms through the restarted store with the round numbers the
    log carried on, the agents' connections reconnect, and every agent exits 0
    with every worker of the last round finished."""
    if server.kind != "ringstore":
        pytest.skip("the write log is ringstore's")
    from conftest import Server, ringstore_bin

    import socket
    with socket.socket() as s:  # a port for both lives of the server
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data, log = tmp_path / "data", tmp_path / "store.log"
    proc = _start_durable(ringstore_bin(), port, data, log)
    try:
        srv = Server("ringstore", "127.0.0.1", port, proc, log)
        job = Job(srv, tmp_path, "jobkill", "2", 2, target=4, max_restarts=3, mode="store")
        job.start_agent()
        job.start_agent()
        first = job.wait_records(lambda r: r["event"] == "up", 4, 120)
        assert {round_of(r) for r in first} == {0}
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        job.wait_records(lambda r: r["event"] == "store_failed", 4, 60)
        proc = _start_durable(ringstore_bin(), port, data, log)
        assert "write log: replayed" in log.read_text(), log.read_text()[-2000:]
        assert job.wait_all(200) == [0, 0], job.logs()
        last = check_final_round(job, 4)
        assert last >= 1  # the restarted store carried the round numbers on
        done = [r for r in job.records() if r["event"] == "done"]
        assert all(int(r["torchelastic_restart_count"]) >= 1 for r in done), done
        assert "reconnected" in job.logs()
        assert run_keys(srv.client(), "jobkill") == LEFT_AFTER_SHUTDOWN
    finally:
        kill_group(proc)
