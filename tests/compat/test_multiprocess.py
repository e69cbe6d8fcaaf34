"""Several client processes at once, with exact final counts (PROTOCOL §3 step 4, §6)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from conftest import HERE, reap, req, s, spawn

WORKERS = str(HERE / "workers.py")


def run_workers(argvs, timeout=90.0, env=None):
    """Start one process per argv, wait for all, assert each printed 'ok'."""
    procs = [spawn([sys.executable, WORKERS, *map(str, a)], stdout=subprocess.PIPE,
                   stderr=subprocess.PIPE, text=True, env=env) for a in argvs]
    outs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            for q in procs:
                reap(q, 0)
            pytest.fail(f"worker {p.args} did not finish in {timeout}s")
        reap(p)
        outs.append((p.returncode, out, err))
    bad = [(a, rc, err[-3000:]) for a, (rc, _, err) in zip(argvs, outs) if rc != 0]
    assert not bad, "worker(s) failed:\n" + "\n".join(f"{a}: rc={rc}\n{e}" for a, rc, e in bad)
    for a, (_, out, _) in zip(argvs, outs):
        assert out.strip().startswith("ok"), (a, out)
    return outs


def raw_get(server, key: bytes) -> bytes:
    """GET a raw wire key (e.g. b'init/', which the Python API cannot name)."""
    with server.raw() as c:
        c.send(req("GET", s(key)))
        return c.recv_bytes()


@pytest.mark.timeout_s(150)
def test_eight_processes_exact_counts(server):
    nproc, iters = 8, 200
    run_workers([("mp_worker", server.host, server.port, r, nproc, iters) for r in range(nproc)])
    st = server.client()
    assert st.get("total") == str(nproc * iters).encode()
    for r in range(nproc):
        assert st.get(f"per/{r}") == str(2 * iters).encode()
        assert st.get(f"done/{r}") == str(r).encode()
    log = st.get("log").decode()
    assert sorted(log.rstrip(",").split(",")) == sorted(str(r) for r in range(nproc) for _ in range(iters // 10))
    assert st.get("end") == str(nproc).encode()  # BARRIER counter
    assert st.queue_len("results") == nproc
    popped = sorted(int(st.queue_pop("results")) for _ in range(nproc))
    assert popped == list(range(nproc))
    # every worker constructed TCPStore(world_size=nproc) -> one ADD init/ 1 each
    assert raw_get(server, b"init/") == str(nproc).encode()
    keys = st.list_keys()
    assert "init/" not in keys
    expected = {"total", "log", "end"} | {f"per/{r}" for r in range(nproc)} | {f"done/{r}" for r in range(nproc)}
    assert set(keys) == expected
    assert st.num_keys() == len(expected) + 1  # + init/


def test_world_size_init_counting(server):
    n = 5
    clients = [server.client(world_size=n) for _ in range(n)]
    assert raw_get(server, b"init/") == str(n).encode()
    assert clients[0].num_keys() == 1
    assert clients[0].list_keys() == []
    # clients without world_size, or with wait_for_workers=False, do not touch init/
    server.client()
    server.client(world_size=n, wait_for_workers=False)
    clients[0].clone()
    assert raw_get(server, b"init/") == str(n).encode()
    # init/ and /init/ are different keys
    clients[0].set("init/", "user")
    # SET has no reply: set() returns once the bytes are sent. Another
    # connection (maybe on another reactor) sees the value once the server
    # processed it; a round trip on the writer's connection guarantees that.
    clients[0].num_keys()
    assert raw_get(server, b"/init/") == b"user"
    assert raw_get(server, b"init/") == str(n).encode()
    assert clients[0].num_keys() == 2
