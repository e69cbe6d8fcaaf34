# SPDX-License-Identifier: MIT
"""The training script the torchrun tests launch: gloo all_reduces over env://.

Usage: worker.py OUTDIR TARGET_WORLD [MODE]

init_process_group("gloo") from the environment torchrun gives it (MASTER_ADDR/
MASTER_PORT point at the store server, TORCHELASTIC_USE_AGENT_STORE=True), then
one all_reduce of rank+1, checked. It appends one JSON record per event to
OUTDIR/w-<pid>.jsonl, sets the key marker/<rank> through the default store, and
records whether that key (and its agent's role info) are where the rendezvous
backend's per-round prefixes put them, read through a raw client.

MODE plain (default): if WORLD_SIZE == TARGET_WORLD it exits 0 after the
all_reduce; otherwise it keeps all_reducing every 0.1 s until torchrun stops it
(scale-up) or a peer dies and a collective fails (exit 1).
MODE store: every step does one ADD through the default store, as lazily
created NCCL pair communicators do. A store request that fails is recorded
("store_failed") and the worker exits 1. A worker of a restarted group
(TORCHELASTIC_RESTART_COUNT > 0) finishes after 5 steps; the first group steps
until the store fails.
MODE release: all_reduces every 0.1 s, without touching the store, until
OUTDIR/release exists.
"""
import datetime
import json
import os
import sys
import time

import torch
import torch.distributed as dist


def record(outdir, **kw):
    keys = ("RANK", "WORLD_SIZE", "GROUP_RANK", "GROUP_WORLD_SIZE", "LOCAL_RANK",
            "MASTER_ADDR", "MASTER_PORT", "TORCHELASTIC_USE_AGENT_STORE",
            "TORCHELASTIC_RESTART_COUNT", "RINGSTORE_WORKER_PREFIX")
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


def where_keys_are(rank: int) -> dict:
    """The marker and the role info read back without any prefix."""
    prefix = os.environ.get("RINGSTORE_WORKER_PREFIX", "")
    agent = prefix[: -len("worker")] + "agent" if prefix.endswith("worker") else ""
    raw = dist.TCPStore(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]),
                        is_master=False, wait_for_workers=False,
                        timeout=datetime.timedelta(seconds=30))
    group = os.environ.get("GROUP_RANK", "0")
    return {
        "marker_under_prefix": bool(raw.check([f"{prefix}/default_pg/0//marker/{rank}"])),
        "role_info_under_prefix": bool(raw.check([f"{agent}/torchelastic/role_info/{group}"])),
    }


def main():
    outdir, target = sys.argv[1], int(sys.argv[2])
    mode = sys.argv[3] if len(sys.argv) > 3 else "plain"
    dist.init_process_group("gloo", timeout=datetime.timedelta(seconds=60))
    world = dist.get_world_size()
    assert world == int(os.environ["WORLD_SIZE"])
    got = all_reduce(world)
    store = dist.distributed_c10d._get_default_store()
    # a marker through init_process_group's own store: the test finds it under
    # the rendezvous round's worker prefix on the server
    store.set(f"marker/{dist.get_rank()}", "1")
    record(outdir, event="up", sum=got, **where_keys_are(dist.get_rank()))
    restarted = int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0
    if mode == "store":
        steps = 0
        while not (restarted and steps >= 5):
            try:
                store.add("steps", 1)
            except Exception as e:  # noqa: BLE001 - the point of this mode
                record(outdir, event="store_failed", error=str(e).splitlines()[0][:200])
                return 1
            all_reduce(world)
            steps += 1
            time.sleep(0.05)
    elif mode == "release":
        while not os.path.exists(os.path.join(outdir, "release")):
            time.sleep(0.1)
            all_reduce(world)
    elif world != target:
        while True:
            time.sleep(0.1)
            all_reduce(world)
    dist.barrier()
    dist.destroy_process_group()
    record(outdir, event="done", sum=got)
    return 0


if __name__ == "__main__":
    sys.exit(main())
