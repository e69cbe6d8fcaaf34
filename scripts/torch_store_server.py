#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Run one of PyTorch's own TCPStore servers for ringstore-bench.

Usage: torch_store_server.py [--host H] [--port P] [--classic]

Starts torch.distributed.TCPStore(host, port, is_master=True,
wait_for_workers=False, use_libuv=not --classic) with port 0 meaning a free
port, prints "torch-store listening on HOST:PORT" on stdout (flushed), then
sleeps until SIGTERM or SIGINT. RLIMIT_NOFILE is raised to the hard limit
first, so the server can hold as many connections as the benchmark opens.
"""
import argparse
import resource
import signal
import sys
import threading


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--classic", action="store_true",
                    help="use_libuv=False (the poll-loop server)")
    args = ap.parse_args()

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

    import torch.distributed as dist
    from datetime import timedelta

    store = dist.TCPStore(args.host, args.port, is_master=True,
                          wait_for_workers=False,
                          use_libuv=not args.classic,
                          timeout=timedelta(seconds=3600))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    kind = "classic" if args.classic else "libuv"
    print(f"torch-store ({kind}) listening on {args.host}:{store.port}",
          flush=True)
    while not stop.wait(3600):
        pass
    del store
    return 0


if __name__ == "__main__":
    sys.exit(main())
