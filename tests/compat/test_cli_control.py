"""ringstore-cli's control-plane subcommands (status, keys, waiters, barriers)
against the real server, with real torch clients creating the state an
operator looks at: a pending rendezvous barrier."""

from __future__ import annotations

import datetime
import json
import subprocess
import threading
import time

import pytest

from conftest import ringstore_bin
from test_control_plane import cp, cp_factory  # noqa: F401  (fixtures)

pytestmark = pytest.mark.ringstore_only


def cli_path():
    return ringstore_bin().parent / "ringstore-cli"


def cli(srv, *args, control=None):
    if control is None:
        control = f"{srv.control[0]}:{srv.control[1]}"
    return subprocess.run([str(cli_path()), "--control", control, *args],
                          capture_output=True, text=True, timeout=20)


def torch_client(srv, **kw):
    import torch.distributed as dist

    return dist.TCPStore("127.0.0.1", srv.port, is_master=False,
                         timeout=datetime.timedelta(seconds=20), **kw)


def test_status_plain_and_json(cp):
    c = torch_client(cp, world_size=4)
    c.set("a", "1")
    assert c.check(["a"])  # SET has no reply: this one makes sure it ran
    r = cli(cp, "status")
    assert r.returncode == 0, r.stderr
    lines = dict(l.split(": ", 1) for l in r.stdout.splitlines())
    assert lines["health"] == "ok"
    assert lines["connections"] == "1"
    assert lines["keys"] == "2"  # /a and init/
    r = cli(cp, "--json", "status")
    assert r.returncode == 0
    doc = json.loads(r.stdout)
    assert doc["ringstore_keys"] == 2
    assert doc["ringstore_connections_active"] == 1


def test_pending_rendezvous_is_visible(cp):
    clients = [torch_client(cp, world_size=3) for _ in range(2)]
    clients[0].set("cfg/addr", "10.0.0.1")
    threads = [threading.Thread(target=c.barrier, args=("rdv", 3)) for c in clients]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 10
    while True:
        doc = json.loads(cli(cp, "barriers").stdout)
        if doc["barriers"] and doc["barriers"][0]["waiting"] == 2:
            break
        assert time.monotonic() < deadline, doc
        time.sleep(0.05)
    b = doc["barriers"][0]
    assert (b["key"], b["arrived"], b["world_size"]) == ("/rdv", 2, 3)
    assert len(b["peers"]) == 2
    assert {"key": "init/", "value": 2} in doc["counters"]
    w = json.loads(cli(cp, "waiters").stdout)
    assert [k["key"] for k in w["keys"]] == ["/rdv"]
    assert w["keys"][0]["waiters"] == 2
    # The third rank arrives: everyone is released and the views empty.
    torch_client(cp, world_size=3).barrier("rdv", 3)
    for t in threads:
        t.join(10)
        assert not t.is_alive()
    assert json.loads(cli(cp, "waiters").stdout)["waits"] == 0
    k = json.loads(cli(cp, "keys", "cfg").stdout)
    assert [e["key"] for e in k["keys"]] == ["/cfg/addr"]
    raw = json.loads(cli(cp, "--raw", "keys", "init").stdout)
    assert [e["key"] for e in raw["keys"]] == ["init/"]


def test_unix_socket_and_errors(cp_factory, tmp_path):
    path = tmp_path / "ctl.sock"
    srv = cp_factory("--control-socket", str(path))
    r = cli(srv, "status", control=f"unix:{path}")
    assert r.returncode == 0 and "health: ok" in r.stdout
    # No control address: usage error; nobody listening: connect error.
    r = subprocess.run([str(cli_path()), "status"], capture_output=True, text=True,
                       timeout=20, env={"PATH": "/usr/bin:/bin"})
    assert r.returncode == 1 and "--control" in r.stderr
    r = cli(srv, "status", control=f"unix:{tmp_path}/nobody.sock")
    assert r.returncode == 2
    r = cli(srv, "keys", "a", "b", "c", control=f"unix:{path}")
    assert r.returncode == 1


def test_delete_prefix(cp):
    """delete-prefix PREFIX posts until nothing remains (the server deletes
    10,000 keys per request) and prints the totals; like every CLI key PREFIX
    gets TCPStore's '/' unless --raw. Deleting nothing exits 4, like
    `delete`."""
    c = torch_client(cp)
    n = 10_025
    c.multi_set([f"nccl_storekey_{i}" for i in range(n)], ["id"] * n)
    c.set("keep/nccl_storekey_0", "v")
    # SET and MULTI_SET have no reply: a request that has one makes sure
    # they ran before the CLI looks.
    assert c.num_keys() == n + 1
    r = cli(cp, "delete-prefix", "nccl_storekey_")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [f"deleted: {n}", "absent: 0"]
    assert c.num_keys() == 1 and c.get("keep/nccl_storekey_0") == b"v"
    r = cli(cp, "delete-prefix", "nccl_storekey_")
    assert r.returncode == 4 and r.stdout.splitlines()[0] == "deleted: 0"
    # --raw: the prefix as stored; --json: the server's document.
    r = cli(cp, "--raw", "--json", "delete-prefix", "/keep/")
    assert r.returncode == 0, r.stderr
    doc = json.loads(r.stdout)
    assert (doc["deleted"], doc["remaining"], doc["sample"]) == \
        (1, 0, ["/keep/nccl_storekey_0"])
    assert c.num_keys() == 0
    # A prefix is required; --help deletes nothing.
    assert cli(cp, "delete-prefix").returncode == 1
    assert cli(cp, "delete-prefix", "").returncode == 1
    c.set("--help", "x")
    r = cli(cp, "delete-prefix", "--help")
    assert r.returncode == 0 and "delete-prefix PREFIX" in r.stdout
    assert c.num_keys() == 1
