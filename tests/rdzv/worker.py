# SPDX-License-Identifier: MIT
"""The training script the torchrun tests launch: gloo all_reduces over env://.

Usage: worker.py OUTDIR TARGET_WORLD

init_process_group("gloo") from the environment torchrun gives it (MASTER_ADDR/
MASTER_PORT point at the store server, TORCHELASTIC_USE_AGENT_STORE=True), then
one all_reduce of rank+1, checked. It appends one JSON record per event to
OUTDIR/w-<pid>.jsonl and sets the key marker/<rank> through the default store. If WORLD_SIZE == TARGET_WORLD it exits 0 after the
all_reduce; otherwise it keeps all_reducing every 0.1 s until torchrun stops it
(scale-up) or a peer dies and a collective fails (exit 1).
"""
import datetime
import json
import os
import sys
import time

import torch
import torch.distributed as dist


def record(outdir, **kw):
    keys = ("RANK", "WORLD_SIZE", "GROUP_RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
            "TORCHELASTIC_USE_AGENT_STORE", "TORCHELASTIC_RESTART_COUNT",
            "RINGSTORE_WORKER_PREFIX")
    kw.update({k.lower(): os.environ.get(k) for k in keys})
    kw.update(pid=os.getpid(), ppid=os.getppid())
    with open(os.path.join(outdir, f"w-{os.getpid()}.jsonl"), "a") as f:
        f.write(json.dumps(kw) + "\n")


def all_reduce(world):
    t = torch.tensor([float(dist.get_rank() + 1)])
    dist.all_reduce(t)
    got = int(t.item())
    assert got == world * (world + 1) // 2, (got, world)
    return got


def main():
    outdir, target = sys.argv[1], int(sys.argv[2])
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    world = dist.get_world_size()
    assert world == int(os.environ["WORLD_SIZE"])
    got = all_reduce(world)
    # a marker through init_process_group's own store: the test finds it under
    # the rendezvous round's worker prefix on the server
    dist.distributed_c10d._get_default_store().set(f"marker/{dist.get_rank()}", "1")
    record(outdir, event="up", sum=got)
    if world == target:
        dist.barrier()
        dist.destroy_process_group()
        record(outdir, event="done", sum=got)
        return 0
    while True:
        time.sleep(0.1)
        all_reduce(world)


if __name__ == "__main__":
    sys.exit(main())
