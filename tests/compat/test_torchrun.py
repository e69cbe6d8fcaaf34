"""torchrun (elastic agents) against the server under test (PROTOCOL §14.2 B and C).

2 agents (nodes) x 2 workers on localhost; each worker does gloo all_reduces
(checked in workers.torchrun_worker) and writes marker keys through a fresh client
of MASTER_ADDR:MASTER_PORT. The test then reads our server to prove who used it.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from conftest import HERE, reap, spawn
from test_multiprocess import raw_get

NNODES, NPROC = 2, 2
WORLD = NNODES * NPROC


def run_agents(argv_for_rank, env, outdir, timeout=150.0):
    procs = []
    for r in range(NNODES):
        log = open(outdir / f"agent{r}.log", "w")
        procs.append((spawn([sys.executable, "-m", "torch.distributed.run", *argv_for_rank(r),
                             str(HERE / "workers.py"), "torchrun_worker", str(outdir)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=str(outdir)), log))
    fails = []
    for r, (p, log) in enumerate(procs):
        try:
            rc = p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            rc = "timeout"
        reap(p, 0)
        log.close()
        if rc != 0:
            fails.append(f"agent {r}: rc={rc}\n" + (outdir / f"agent{r}.log").read_text()[-4000:])
    if fails:
        for p, _ in procs:
            reap(p, 0)
    assert not fails, "\n".join(fails)
    envs = {}
    for rank in range(WORLD):
        f = outdir / f"rank{rank}.txt"
        assert f.exists(), f"worker rank {rank} did not finish"
        envs[rank] = ast.literal_eval(f.read_text())
    return envs


def base_env():
    env = dict(os.environ)
    env.pop("TORCHELASTIC_USE_AGENT_STORE", None)
    env.pop("MASTER_PORT", None)
    env.pop("MASTER_ADDR", None)
    env["OMP_NUM_THREADS"] = "1"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.mark.timeout_s(180)
def test_torchrun_static_backend_uses_our_store(server, tmp_path):
    """Recipe B: --rdzv-backend=static --master-addr/--master-port = our server.

    Agent 0 builds TCPStore(is_master=True, world_size=2, multi_tenant=True) on our
    port; the bind fails (our server holds it) and is tolerated because the agents'
    env has TORCHELASTIC_USE_AGENT_STORE=1 and MASTER_PORT=<port>. Workers get
    MASTER_ADDR/PORT = our server and TORCHELASTIC_USE_AGENT_STORE=True.
    """
    env = base_env()
    env.update(TORCHELASTIC_USE_AGENT_STORE="1", MASTER_PORT=str(server.port))

    def argv(r):
        return [f"--nnodes={NNODES}", f"--node-rank={r}", f"--nproc-per-node={NPROC}",
                "--rdzv-backend=static", f"--master-addr={server.host}",
                f"--master-port={server.port}", "--max-restarts=0", "--monitor-interval=0.2"]

    envs = run_agents(argv, env, tmp_path)
    for rank, e in envs.items():
        assert e["MASTER_ADDR"] == server.host and e["MASTER_PORT"] == str(server.port), e
        assert e["TORCHELASTIC_USE_AGENT_STORE"] == "True", e
    agent0 = (tmp_path / "agent0.log").read_text()
    assert "TORCHELASTIC_USE_AGENT_STORE is enabled so ignoring the error" in agent0

    st = server.client()
    keys = set(st.list_keys())
    # workers' marker keys and gloo bootstrap keys are on our server
    assert {f"torchrun_worker/{r}" for r in range(WORLD)} <= keys, keys
    assert st.get("torchrun_worker_count") == str(WORLD).encode()
    assert len([k for k in keys if k.startswith("default_pg/") and "/cpu/" in k]) >= WORLD, keys
    # the agents' rendezvous/elastic keys too (static handler: PrefixStore(run_id="none"))
    assert {"none/torchelastic/role_info/0", "none/torchelastic/role_info/1",
            "none/torchelastic/assigned_ranks/0", "none/torchelastic/assigned_ranks/1"} <= keys, keys
    # init/: 2 agents (world_size=nnodes) + 4 workers (world_size=WORLD) each ADD 1
    assert raw_get(server, b"init/") == str(NNODES + WORLD).encode()


@pytest.mark.timeout_s(180)
def test_torchrun_c10d_backend_rendezvous_on_our_store(server, tmp_path):
    """Recipe C: --rdzv-backend=c10d --rdzv-endpoint=<ours> --rdzv-conf=is_host=false.

    Only the agents' rendezvous uses our server; the rank-0 agent hosts a fresh
    TCPStore for the workers (shared rdzv store), so workers' MASTER_PORT is not ours.
    """
    env = base_env()
    run_id = "rsjob"

    def argv(r):
        return [f"--nnodes={NNODES}", f"--nproc-per-node={NPROC}", "--rdzv-backend=c10d",
                f"--rdzv-endpoint={server.host}:{server.port}", f"--rdzv-id={run_id}",
                "--rdzv-conf=is_host=false,read_timeout=60", "--max-restarts=0",
                "--monitor-interval=0.2"]

    envs = run_agents(argv, env, tmp_path)
    ports = {e["MASTER_PORT"] for e in envs.values()}
    assert len(ports) == 1 and ports != {str(server.port)}, envs
    st = server.client()
    keys = set(st.list_keys())
    assert f"torch.rendezvous.{run_id}" in keys, keys
    assert {f"torch.rendezvous.{run_id}.0/MASTER_ADDR", f"torch.rendezvous.{run_id}.0/MASTER_PORT"} <= keys
    assert st.get(f"torch.rendezvous.{run_id}.0/MASTER_PORT") == ports.pop().encode()
    # workers did not touch our server
    assert not any(k.startswith("torchrun_worker") for k in keys), keys
    assert not any(k.startswith("default_pg/") for k in keys), keys
