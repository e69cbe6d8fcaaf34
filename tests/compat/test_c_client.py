# SPDX-License-Identifier: MIT
"""The C client (libringstore + ringstore-cli) against both store servers.

Every test here runs twice, whatever RINGSTORE_TARGET says: against the ringstore
binary and against PyTorch's own libuv TCPStore server (hosted by conftest's
helper process). Two kinds of test:

* ``test_cmocka_suite`` runs the cmocka program ``<build>/bin/test_client``
  (tests/client/test_client.c) with RS_TEST_ADDR pointing at the server and
  checks its exit code and summary line.
* The interop tests drive ``<build>/bin/ringstore-cli`` next to unmodified
  PyTorch clients and check that both see the same keys: the CLI's "/" prefix
  matches PyTorch's, list_keys agrees, waits/queues/barriers cross over.
* The restart tests (ringstore only: they SIGKILL the server and start it
  again on the same port) check that ``wait --watch`` reconnects and waits on,
  and that without reconnect, or past its deadline, the CLI gives up with the
  documented exit status. The library's reconnect rule itself is tested in
  the cmocka suite, through a fault-injecting proxy, against both servers.

The build directory is $RS_BUILD_DIR, else <repo>/build (as for the server).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import threading
import time
from datetime import timedelta
from pathlib import Path

import pytest

from conftest import ROOT, Server, _start_ringstore, _TorchHost, kill_group, reap, spawn


def _bin(name: str) -> Path:
    build = Path(os.environ.get("RS_BUILD_DIR") or ROOT / "build")
    path = build / "bin" / name
    if not (path.is_file() and os.access(path, os.X_OK)):
        pytest.fail(f"{path} not found: build with -DRS_BUILD_TESTS=ON "
                    "(client/ and tests/client/)", pytrace=False)
    return path


@pytest.fixture(params=["ringstore", "torch"])
def any_server(request, tmp_path):
    """A fresh server of each kind, independent of RINGSTORE_TARGET."""
    if request.param == "ringstore":
        srv = _start_ringstore(tmp_path, int(os.environ.get("RS_THREADS", "1")), [])
    else:
        srv = Server("torch", "127.0.0.1", _TorchHost.new_port())
    yield srv
    rc = srv.stop()
    if srv.kind == "ringstore":
        assert rc == 0, f"ringstore exited with {rc}; log tail:\n{srv.log_tail()}"


class Cli:
    """ringstore-cli bound to one server."""

    def __init__(self, server: Server):
        self.server = server
        self.exe = str(_bin("ringstore-cli"))

    def argv(self, *args, raw=False, json_out=False, timeout="10"):
        g = ["--addr", f"{self.server.host}:{self.server.port}", "--timeout", timeout]
        if raw:
            g.append("--raw")
        if json_out:
            g.append("--json")
        return [self.exe, *g, *map(str, args)]

    def run(self, *args, input: bytes | None = None, raw=False, json_out=False,
            timeout="10") -> subprocess.CompletedProcess:
        return subprocess.run(self.argv(*args, raw=raw, json_out=json_out, timeout=timeout),
                              input=input, capture_output=True, timeout=60)

    def ok(self, *args, **kw) -> bytes:
        p = self.run(*args, **kw)
        assert p.returncode == 0, f"{args}: rc={p.returncode} stderr={p.stderr!r}"
        return p.stdout


@pytest.fixture
def cli(any_server):
    return Cli(any_server)


@pytest.mark.timeout_s(240)
def test_cmocka_suite(any_server):
    env = dict(os.environ, RS_TEST_ADDR=f"{any_server.host}:{any_server.port}")
    p = subprocess.run([str(_bin("test_client"))], env=env, capture_output=True,
                       text=True, timeout=200)
    out = p.stdout + p.stderr
    assert p.returncode == 0, f"test_client failed against {any_server}:\n{out}"
    m = re.search(r"\[  PASSED  \] (\d+) test\(s\)\.", out)
    assert m and int(m.group(1)) >= 28, out  # the reconnect tests included
    assert "FAILED" not in out, out


def test_cli_set_python_get(any_server, cli):
    store = any_server.client()
    cli.ok("set", "greeting", "hello")
    assert store.get("greeting") == b"hello"
    blob = bytes(range(256)) * 4
    cli.ok("set", "blob", "-", input=blob)
    assert store.get("blob") == blob
    cli.ok("append", "greeting", " world")
    assert store.get("greeting") == b"hello world"
    cli.ok("multi-set", "m1", "a", "m2", "b")
    assert store.multi_get(["m1", "m2"]) == [b"a", b"b"]
    # raw mode writes exactly the given key: Python sees it only with the slash stripped
    cli.ok("set", "/rawslash", "r", raw=True)
    assert store.get("rawslash") == b"r"


def test_python_set_cli_get(any_server, cli):
    store = any_server.client()
    store.set("k", b"v\x00\xffbin")
    assert cli.ok("get", "k") == b"v\x00\xffbin"
    assert cli.ok("get", "/k", raw=True) == b"v\x00\xffbin"
    store.multi_set(["x", "y"], ["1", "2"])
    assert cli.ok("multi-get", "x", "y") == b"1\n2\n"
    out = json.loads(cli.ok("get", "x", json_out=True))
    assert out == {"ok": True, "op": "get", "key": "x", "value": "1"}
    out = json.loads(cli.ok("get", "k", json_out=True))
    assert out["value"] == {"base64": "dgD/Ymlu"}
    assert cli.ok("check", "x", "y") == b"true\n"


def test_counters_and_compare_set_shared(any_server, cli):
    store = any_server.client()
    assert cli.ok("add", "c", "5") == b"5\n"
    assert store.add("c", 2) == 7
    assert cli.ok("add", "c", "-10") == b"-3\n"
    assert store.get("c") == b"-3"
    assert cli.ok("compare-set", "cas", "", "first") == b"first"
    assert store.compare_set("cas", "first", "second") == b"second"
    assert cli.ok("compare-set", "cas", "nope", "third") == b"second"
    assert cli.ok("delete", "cas") == b"1\n"
    assert not store.check(["cas"])
    assert int(cli.ok("num-keys")) == store.num_keys()


def test_list_keys_agree(any_server, cli):
    store = any_server.client(world_size=1)  # creates the unprefixed "init/" key
    store.set("py/a", "1")
    cli.ok("set", "cli/b", "2")
    cli.ok("set", "rawonly", "3", raw=True)  # no "/": hidden from list_keys
    lines = cli.ok("list-keys").decode().splitlines()
    assert lines == sorted(store.list_keys()) == ["cli/b", "py/a"]
    raw = cli.ok("list-keys", raw=True).decode().splitlines()
    assert raw == sorted(["/cli/b", "/py/a", "init/", "rawonly"])
    assert json.loads(cli.ok("list-keys", json_out=True))["keys"] == ["cli/b", "py/a"]
    assert int(cli.ok("num-keys")) == store.num_keys() == 4


def test_cli_wait_released_by_python(any_server, cli):
    store = any_server.client()
    p = spawn(cli.argv("wait", "late1", "late2", "--watch", "--interval", "0.2"),
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(0.5)
    store.set("late1", "x")
    time.sleep(0.5)
    assert p.poll() is None, "wait returned before all keys existed"
    store.set("late2", "y")
    assert reap(p, timeout=10) == 0
    err = p.stderr.read().decode()
    assert "waiting for late2 (1/2 present)" in err, err
    assert "all 2 key(s) present" in err, err


def test_python_wait_released_by_cli(any_server, cli):
    store = any_server.client()
    t = threading.Timer(0.3, lambda: cli.ok("set", "from-cli", "z"))
    t.start()
    store.wait(["from-cli"], timedelta(seconds=10))
    t.join()
    assert store.get("from-cli") == b"z"


def test_queues_cross(any_server, cli):
    store = any_server.client()
    store.queue_push("q", b"py-item")
    # QUEUE_PUSH has no reply: a request on the same connection is answered
    # after it, while the CLI's connection may be served first by another
    # reactor.
    assert store.queue_len("q") == 1
    assert cli.ok("queue-len", "q") == b"1\n"
    assert cli.ok("queue-pop", "q") == b"py-item"
    cli.ok("queue-push", "q", "cli-item")
    assert store.queue_pop("q") == b"cli-item"  # blocking: the same race
    # a blocking CLI pop is released by a Python push
    p = spawn(cli.argv("queue-pop", "q2", "--timeout", "10"), stdout=subprocess.PIPE)
    time.sleep(0.3)
    store.queue_push("q2", b"wake")
    assert reap(p, timeout=10) == 0
    assert p.stdout.read() == b"wake"


def test_barrier_cli_and_python(any_server, cli):
    store = any_server.client()
    p = spawn(cli.argv("barrier", "bar", "2"), stdout=subprocess.PIPE)
    time.sleep(0.3)
    assert p.poll() is None, "barrier passed with one of two arrivals"
    store.barrier("bar", 2, timedelta(seconds=10))
    assert reap(p, timeout=10) == 0


def test_cli_exit_codes(any_server, cli):
    assert cli.run("get", "--no-wait", "missing").returncode == 4
    assert cli.run("check", "missing").returncode == 4
    assert cli.run("delete", "missing").returncode == 4
    assert cli.run("queue-pop", "noq", "--no-block").returncode == 4
    assert cli.run("wait", "missing", timeout="0.3").returncode == 3
    assert cli.run("get", "missing", timeout="0.3").returncode == 3
    assert cli.run("barrier", "lonely", "2", "--timeout", "0.3").returncode == 3
    assert cli.run("bogus-op").returncode == 1
    assert cli.run("add", "k", "notanumber").returncode == 1
    assert cli.run("--help").returncode == 0
    assert cli.run("get", "--help").returncode == 0
    cli.ok("set", "text", "abc")
    assert cli.run("add", "text", "1").returncode == 5  # server closes the connection
    closed = subprocess.run([cli.exe, "--addr", "127.0.0.1:1", "--connect-timeout", "0.5",
                             "ping"], capture_output=True, timeout=30)
    assert closed.returncode == 2
    err = json.loads(cli.run("get", "--no-wait", "missing", json_out=True).stdout)
    assert err == {"ok": False, "op": "get", "error": "key not found", "exit": 4}


def _ringstore(tmp_path, extra=()):
    return _start_ringstore(tmp_path, int(os.environ.get("RS_THREADS", "1")), list(extra))


def _kill9(srv: Server) -> None:
    kill_group(srv.proc)
    srv.exit_code = srv.proc.wait(timeout=10)
    assert srv.exit_code == -signal.SIGKILL


def _restart(srv: Server, tmp_path) -> Server:
    """SIGKILL @srv and start a fresh ringstore on its port (its data is gone)."""
    _kill9(srv)
    new = _ringstore(tmp_path, ["--port", str(srv.port)])
    assert new.port == srv.port
    return new


def _json_lines(p) -> list[dict]:
    return [json.loads(line) for line in p.stdout.read().splitlines()]


@pytest.mark.timeout_s(120)
def test_cli_wait_watch_survives_server_restarts(tmp_path):
    srv = _ringstore(tmp_path)
    cli = Cli(srv)
    p = spawn(cli.argv("wait", "k1", "k2", "--watch", "--interval", "0.2",
                       json_out=True, timeout="100"),
              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []
    try:
        for restart in range(2):
            # the watch waits on this server once it has reconnected to it
            # (restart times so far) and reported progress after that
            while True:
                line = json.loads(p.stdout.readline())
                seen.append(line)
                if line["event"] == "reconnected":
                    assert line["reconnects"] == restart, seen
                elif line["present"] == 0 and sum(
                        x["event"] == "reconnected" for x in seen) == restart:
                    break
            srv = _restart(srv, tmp_path)
        store = srv.client()
        store.set("k1", "a")
        store.set("k2", "b")
        assert reap(p, timeout=60) == 0, p.stderr.read()
        lines = seen + _json_lines(p)
        reconnects = [x["reconnects"] for x in lines if x.get("event") == "reconnected"]
        assert reconnects == [1, 2], lines
        assert lines[-1]["ok"] is True and lines[-1]["op"] == "wait", lines
    finally:
        reap(p, timeout=0)
        rc = srv.stop()
    assert rc == 0, srv.log_tail()


def test_cli_wait_watch_gives_up_without_reconnect_or_past_its_deadline(tmp_path):
    srv = _ringstore(tmp_path)
    cli = Cli(srv)
    # --reconnect 0: reconnect off, so the server's death ends the watch (5)
    off = spawn(cli.argv("wait", "never", "--watch", "--interval", "0.1",
                         "--reconnect", "0", json_out=True, timeout="60"),
                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    # a server that does not come back within --reconnect 1: exit 2
    gone = spawn(cli.argv("wait", "never", "--watch", "--interval", "0.1",
                          "--reconnect", "1", json_out=True, timeout="60"),
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    for q in (off, gone):  # both are waiting on the server: progress lines
        assert json.loads(q.stdout.readline())["event"] == "progress"
    _kill9(srv)
    assert reap(off, timeout=30) == 5
    last = _json_lines(off)[-1]
    assert last["exit"] == 5 and last["error"] == "connection closed by the server", last
    assert reap(gone, timeout=30) == 2
    last = _json_lines(gone)[-1]
    assert last["ok"] is False and last["exit"] == 2, last
    assert last["error"].startswith("not connected"), last
