"""Client programs run as separate processes by the compat tests.

    python workers.py <mode> <host> <port> [args...]

Each mode prints one result line on success ("ok ..." unless noted) and exits 0;
any failure raises (exit 1 with a traceback on stderr).
"""

from __future__ import annotations

import os
import sys
import time
from datetime import timedelta

TIMEOUT = timedelta(seconds=30)


def client(host, port, **kw):
    import torch.distributed as dist

    kw.setdefault("timeout", TIMEOUT)
    return dist.TCPStore(host, int(port), is_master=False, **kw)


def wait_forever(host, port):
    s = client(host, port)
    print("waiting", flush=True)
    s.wait(["never"], timedelta(seconds=120))


def mp_worker(host, port, rank, nproc, iters):
    """Adds, sets, appends, queue pushes and cross-process waits with exact totals."""
    rank, nproc, iters = int(rank), int(nproc), int(iters)
    s = client(host, port, world_size=nproc)
    for i in range(iters):
        s.add("total", 1)
        s.add(f"per/{rank}", 2)
        if i % 10 == 0:
            s.append("log", f"{rank},")
    s.set(f"done/{rank}", str(rank))
    s.queue_push("results", f"{rank}")
    # everybody waits for everybody (cross-process wake-ups)
    s.wait([f"done/{r}" for r in range(nproc)], timedelta(seconds=30))
    vals = s.multi_get([f"done/{r}" for r in range(nproc)])
    assert vals == [str(r).encode() for r in range(nproc)], vals
    s.barrier("end", nproc, timedelta(seconds=30))
    total = int(s.get("total"))
    assert total == nproc * iters, total
    print(f"ok {rank}", flush=True)


def gloo_store(host, port, rank, world):
    """init_process_group with the store= form over a pure TCPStore client."""
    import torch
    import torch.distributed as dist

    rank, world = int(rank), int(world)
    store = dist.TCPStore(host, int(port), world_size=world, is_master=False, timeout=TIMEOUT)
    dist.init_process_group("gloo", store=store, rank=rank, world_size=world, timeout=TIMEOUT)
    _allreduce_check(rank, world)
    dist.barrier()
    dist.destroy_process_group()
    print(f"ok {rank}", flush=True)


def gloo_env(host, port, rank, world):
    """init_process_group via env:// with TORCHELASTIC_USE_AGENT_STORE=True (set by the test)."""
    import torch.distributed as dist

    rank, world = int(rank), int(world)
    assert os.environ["TORCHELASTIC_USE_AGENT_STORE"] == "True"
    assert os.environ["MASTER_PORT"] == str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=TIMEOUT)
    _allreduce_check(rank, world)
    dist.barrier()
    dist.destroy_process_group()
    print(f"ok {rank}", flush=True)


def _allreduce_check(rank, world):
    import torch
    import torch.distributed as dist

    t = torch.arange(4, dtype=torch.float64) + rank * 10
    dist.all_reduce(t)
    expect = torch.arange(4, dtype=torch.float64) * world + 10 * sum(range(world))
    assert torch.equal(t, expect), (t, expect)
    # a second collective with a different op
    m = torch.tensor([float(rank)])
    dist.all_reduce(m, op=dist.ReduceOp.MAX)
    assert m.item() == world - 1


def torchrun_worker(outdir):
    """Script body for torchrun workers: gloo all_reduce + marker keys on the store."""
    import torch
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    world = int(os.environ["WORLD_SIZE"])
    env = {k: os.environ.get(k, "") for k in
           ("MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE", "LOCAL_RANK",
            "GROUP_RANK", "TORCHELASTIC_RUN_ID")}
    dist.init_process_group("gloo", timeout=TIMEOUT)
    _allreduce_check(rank, world)
    # Write through a fresh pure client of MASTER_ADDR:MASTER_PORT too; the test reads
    # these keys back from its own server to prove where the workers' store was.
    s = client(os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"])
    s.set(f"torchrun_worker/{rank}", f"{env['GROUP_RANK']}:{env['LOCAL_RANK']}:{os.getpid()}")
    s.add("torchrun_worker_count", 1)
    dist.barrier()
    dist.destroy_process_group()
    with open(os.path.join(outdir, f"rank{rank}.txt"), "w") as f:
        f.write(repr(env) + "\n")
    print(f"ok {rank}", flush=True)


MODES = {f.__name__: f for f in (wait_forever, mp_worker, gloo_store, gloo_env, torchrun_worker)}

if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    MODES[mode](*args)
