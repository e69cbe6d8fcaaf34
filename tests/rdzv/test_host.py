# SPDX-License-Identifier: MIT
"""The rendezvous that hosts its own store (ringstore._host).

ensure_store() is called in this process (the "agent"), with the build's
server ($RINGSTORE_BIN) and a state directory under the test's tmp_path;
racing agents are separate processes released at one moment; the last test
is a real torchrun job (2 agents x 2 workers, gloo) where nothing listens on
the endpoint beforehand: the handler's creation (create_handler) starts the
store.

A store that this process started is its child and is reaped with it; one
that an agent process started is found through /proc (its --data-dir is
under tmp_path) and killed when the test ends. Tests wait for observable
state (a listener, an exit), never for a duration.
"""
from __future__ import annotations

import datetime
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import _start, ringstore_bin, spawn
from procs import register_proc
from ringstore import _host
from ringstore._host import StoreStartError, ensure_store, job_dir, listener_pids

HERE = Path(__file__).resolve().parent


@pytest.fixture(autouse=True)
def _bin(monkeypatch):
    monkeypatch.setenv("RINGSTORE_BIN", str(ringstore_bin()))


@pytest.fixture
def port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(port: int):
    import torch.distributed as dist
    return dist.TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False,
                         timeout=datetime.timedelta(seconds=30))


def stat_fields(pid: int) -> list[str]:
    """/proc/PID/stat after the command name: [state, ppid, pgrp, session, ...]."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def gone(pid: int) -> bool:
    try:
        return stat_fields(pid)[0] == "Z"
    except FileNotFoundError:
        return True


def stores(under: Path) -> list[int]:
    """Live ringstore processes whose arguments name a path under @under."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if Path(f"/proc/{pid}/comm").read_text().strip() != "ringstore":
                continue
            argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if any(a.startswith(str(under).encode()) for a in argv):
            out.append(int(pid))
    return out


def wait_for(pred, what: str, timeout: float = 30.0):
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, f"still waiting for {what}"
        time.sleep(0.05)


@pytest.fixture
def state(tmp_path):
    """The state directory; every store still running under it is killed."""
    yield tmp_path / "state"
    for pid in stores(tmp_path):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def started(hs: _host.HostedStore | None) -> _host.HostedStore:
    assert hs is not None and hs.started, hs
    register_proc(hs.proc)  # killed with the test's other processes
    return hs


def test_starts_a_detached_store_then_finds_it(state, port):
    run_id = "job 1/a"
    hs = started(ensure_store("127.0.0.1", port, run_id, state_dir=str(state),
                              idle_exit=60))
    job = Path(job_dir(run_id, str(state)))
    assert job.parent == state and job.name.startswith("job_1_a-")
    # its own session, named ringstore, reading nothing, logging to the file
    st = stat_fields(hs.pid)
    assert int(st[3]) == hs.pid != os.getsid(0), st
    assert Path(f"/proc/{hs.pid}/comm").read_text().strip() == "ringstore"
    assert os.readlink(f"/proc/{hs.pid}/fd/0") == "/dev/null"
    assert hs.log_path == str(job / "ringstore.log")
    assert os.readlink(f"/proc/{hs.pid}/fd/1") == hs.log_path
    assert os.readlink(f"/proc/{hs.pid}/fd/2") == hs.log_path
    assert hs.data_dir == str(job / "data") and (job / "data" / "LOCK").is_file()
    assert f"ringstore listening on [::]:{port}" in Path(hs.log_path).read_text()
    assert listener_pids(port) == {hs.pid}
    c = client(port)
    c.set("k", "v")
    again = ensure_store("127.0.0.1", port, run_id, state_dir=str(state))
    assert again == _host.HostedStore("127.0.0.1", port, started=False, pid=hs.pid)
    assert stores(state) == [hs.pid] and c.get("k") == b"v"


def test_is_host_rule_and_conf(state, port):
    from torch.distributed.elastic.rendezvous import RendezvousParameters

    def params(endpoint, **conf):
        return RendezvousParameters("ringstore", endpoint, "conf", 1, 1, **conf)

    # another machine's endpoint, or is_host=false: nothing to do
    assert ensure_store("192.0.2.1", port, "conf", state_dir=str(state)) is None
    assert _host.ensure_store_for(params(f"localhost:{port}", is_host="no",
                                         state_dir=str(state)), default_port=1) is None
    assert not state.exists() and not listener_pids(port)
    with pytest.raises(ValueError, match="is_host"):  # c10d's parsing
        _host.ensure_store_for(params(f"localhost:{port}", is_host="maybe"),
                               default_port=1)
    with pytest.raises(ValueError, match="fsync"):
        ensure_store("localhost", port, "conf", state_dir=str(state), fsync="sometimes")
    # is_host=true hosts whatever the endpoint's name; the conf keys reach the server
    hs = started(_host.ensure_store_for(
        params(f"192.0.2.1:{port}", is_host="1", state_dir=str(state), idle_exit="7",
               fsync="always", start_timeout="30"), default_port=1))
    argv = Path(f"/proc/{hs.pid}/cmdline").read_bytes().decode().split("\0")
    assert argv[1:9] == ["--port", str(port), "--data-dir", str(state / "conf" / "data"),
                         "--fsync", "always", "--idle-exit", "7"], argv


def test_store_started_by_someone_else_is_used_and_left_alone(state, tmp_path):
    other = _start("ringstore", tmp_path)  # `ringstore --port 0 --bind 127.0.0.1`
    hs = ensure_store("127.0.0.1", other.port, "job", state_dir=str(state), idle_exit=1)
    assert hs == _host.HostedStore("127.0.0.1", other.port, started=False,
                                   pid=other.proc.pid)
    assert not state.exists()  # it started nothing and made no job dir
    c = client(other.port)
    c.set("k", "v")
    del c
    assert other.proc.poll() is None and client(other.port).get("k") == b"v"


RACER = """
import json, sys
from ringstore._host import ensure_store
port, state = int(sys.argv[1]), sys.argv[2]
import torch.distributed as dist, datetime
print("ready", flush=True)
sys.stdin.readline()
hs = ensure_store("127.0.0.1", port, "race", state_dir=state, idle_exit=60)
st = dist.TCPStore("127.0.0.1", port, is_master=False, wait_for_workers=False,
                   timeout=datetime.timedelta(seconds=30))
print(json.dumps({"started": hs.started, "pid": hs.pid, "n": st.add("callers", 1)}),
      flush=True)
sys.stdin.readline()  # stay connected until the test has looked
"""


@pytest.mark.timeout_s(120)
@pytest.mark.parametrize("shared", [True, False], ids=["one-state-dir", "own-state-dirs"])
def test_racing_agents_end_with_one_store(state, port, shared):
    """Agents of one job share the job dir's lock; agents that do not (other
    state dirs) all start a server, and the port allows one."""
    n = 3
    racers = []
    for i in range(n):
        sd = state if shared else state / f"agent{i}"
        racers.append(spawn([sys.executable, "-c", RACER, str(port), str(sd)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True))
    for p in racers:
        assert p.stdout.readline().strip() == "ready"
    for p in racers:  # as close to one moment as a loop gets
        p.stdin.write("go\n")
        p.stdin.flush()
    got = []
    for p in racers:
        line = p.stdout.readline()
        assert line, f"racer exited with {p.wait()}"
        got.append(json.loads(line))
    winners = [g for g in got if g["started"]]
    assert len(winners) == 1, got
    pid = winners[0]["pid"]
    # one ringstore listens, every caller connected to it, no loser still runs
    assert listener_pids(port) == {pid}
    assert {g["pid"] for g in got} == {pid}
    assert sorted(g["n"] for g in got) == list(range(1, n + 1))
    assert int(client(port).get("callers")) == n
    assert stores(state) == [pid]
    if shared:  # they took turns: one server was ever started
        log = (state / "race" / "ringstore.log").read_text()
        assert log.count("ringstore listening on") == 1, log
        assert "in use by another ringstore" not in log, log
    for p in racers:
        p.stdin.close()
        assert p.wait(timeout=30) == 0
    # the store outlived the agents that started it
    assert not gone(pid) and listener_pids(port) == {pid}


def test_store_exits_after_its_last_client(state, port):
    hs = started(ensure_store("127.0.0.1", port, "idle", state_dir=str(state), idle_exit=1))
    c = client(port)
    c.set("k", "v")
    time.sleep(2.5)  # past idle_exit: a connected client keeps it
    assert hs.proc.poll() is None and c.get("k") == b"v"
    del c
    assert hs.proc.wait(timeout=30) == 0
    assert "no client for 1 s (--idle-exit)" in Path(hs.log_path).read_text()
    # a job that ended is not replayed: the next store of the run id starts empty
    wait_for(lambda: not listener_pids(port), "the port to close")
    again = started(ensure_store("127.0.0.1", port, "idle", state_dir=str(state)))
    assert again.pid != hs.pid and again.data_dir == hs.data_dir
    assert not client(port).check(["k"])
    assert (Path(hs.data_dir).parent / "data.previous" / "LOCK").is_file()


def test_killed_store_is_replayed_by_a_new_creation(state, port):
    hs = started(ensure_store("127.0.0.1", port, "crash", state_dir=str(state),
                              fsync="always"))
    c = client(port)
    for i in range(10):
        c.set(f"k{i}", f"v{i}")
    assert c.get("k9") == b"v9"  # replied after the sets were on disk
    del c
    hs.proc.send_signal(signal.SIGKILL)
    hs.proc.wait()
    # the kernel closes a killed io_uring server's sockets in the background
    wait_for(lambda: not listener_pids(port), "the dead store's port to close")
    again = started(ensure_store("127.0.0.1", port, "crash", state_dir=str(state)))
    assert again.pid != hs.pid and again.data_dir == hs.data_dir
    c = client(port)
    assert [c.get(f"k{i}") for i in range(10)] == [f"v{i}".encode() for i in range(10)]
    assert not (Path(hs.data_dir).parent / "data.previous").exists()


def test_no_server_binary(state, port, tmp_path, monkeypatch):
    monkeypatch.setenv("RINGSTORE_BIN", str(tmp_path / "no-such-ringstore"))
    with pytest.raises(StoreStartError, match=r"pip install ringstore.*ringstore --port"):
        ensure_store("127.0.0.1", port, "nobin", state_dir=str(state))
    assert not listener_pids(port)


def test_server_that_exits_is_reported_with_its_log(state, port):
    job = Path(job_dir("bad", str(state)))
    job.mkdir(parents=True)
    (job / "data").write_text("a file where the data dir should be")
    with pytest.raises(StoreStartError, match=r"exited with status 1(.|\n)*data"):
        ensure_store("127.0.0.1", port, "bad", state_dir=str(state))
    assert not listener_pids(port) and not stores(state)


@pytest.mark.timeout_s(180)
def test_torchrun_job_hosts_its_own_store(state, port, tmp_path):
    """Nothing listens on the endpoint; both agents are on its host; one of
    them starts the store, the other finds it, 4 workers all_reduce through
    it, and it ends by itself after the agents."""
    assert not listener_pids(port)
    env = dict(os.environ, PYTHONUNBUFFERED="1", RINGSTORE_STATE_DIR=str(state))
    for k in ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE"):
        env.pop(k, None)
    conf = ("last_call_timeout=2,join_timeout=90,keep_alive_interval=1,read_timeout=30,"
            "idle_exit=2")
    agents = []
    for i in range(2):
        log = tmp_path / f"agent{i}.log"
        with open(log, "w") as f:
            agents.append((spawn(
                [sys.executable, "-m", "torch.distributed.run", "--nnodes=2",
                 "--nproc-per-node=2", "--rdzv-backend=ringstore",
                 f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=hosted",
                 f"--rdzv-conf={conf}", "--max-restarts=0", "--monitor-interval=0.2",
                 str(HERE / "worker.py"), str(tmp_path), "4"],
                env=env, stdout=f, stderr=subprocess.STDOUT, cwd=str(tmp_path)), log))
    rcs = [p.wait(timeout=150) for p, _ in agents]
    logs = [log.read_text() for _, log in agents]
    assert rcs == [0, 0], "\n".join(logs)
    done = [json.loads(line) for f in tmp_path.glob("w-*.jsonl")
            for line in f.read_text().splitlines() if '"done"' in line]
    assert sorted(int(r["rank"]) for r in done) == [0, 1, 2, 3], done
    assert {(r["master_addr"], r["master_port"], r["sum"]) for r in done} == {
        ("127.0.0.1", str(port), 10)}
    # one store was started, for this job, with its data dir and log there
    job = state / "hosted"
    text = (job / "ringstore.log").read_text()
    assert text.count("ringstore listening on") == 1, text
    pid = int((job / "data" / "LOCK").read_text())
    # it outlived its agent and ended by itself once the last client left
    wait_for(lambda: gone(pid), "the job's store to exit", timeout=60)
    assert "(--idle-exit): shutting down" in (job / "ringstore.log").read_text()
    assert not listener_pids(port)
