"""init_process_group("gloo") with 4 ranks whose store is the server under test (PROTOCOL §14.2 A)."""

from __future__ import annotations

import os

import pytest

from test_multiprocess import raw_get, run_workers

WORLD = 4


@pytest.mark.timeout_s(120)
def test_gloo_store_form(server):
    run_workers([("gloo_store", server.host, server.port, r, WORLD) for r in range(WORLD)])
    st = server.client()
    assert raw_get(server, b"init/") == str(WORLD).encode()
    keys = st.list_keys()
    # gloo's bootstrap happened on our server; in 2.13 the store= form leaves one
    # connect-info key per rank shaped like '0//cpu//0/<rank>'
    gloo = sorted(k for k in keys if "/cpu/" in k)
    assert len(gloo) >= WORLD, keys


@pytest.mark.timeout_s(120)
def test_gloo_env_agent_store(server):
    env = dict(os.environ)
    env.update(MASTER_ADDR=server.host, MASTER_PORT=str(server.port), WORLD_SIZE=str(WORLD),
               TORCHELASTIC_USE_AGENT_STORE="True", TORCHELASTIC_RESTART_COUNT="0")
    argvs = [("gloo_env", server.host, server.port, r, WORLD) for r in range(WORLD)]
    # RANK per process
    import subprocess
    import sys

    from conftest import HERE, reap, spawn

    procs = []
    for r, a in enumerate(argvs):
        e = dict(env, RANK=str(r))
        procs.append(spawn([sys.executable, str(HERE / "workers.py"), *map(str, a)], env=e,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    fails = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=90)
        except subprocess.TimeoutExpired:
            out, err = "", "timeout"
        reap(p, 0)
        if p.returncode != 0 or not out.startswith("ok"):
            fails.append(f"{p.args}: rc={p.returncode}\n{err[-3000:]}")
    assert not fails, "\n".join(fails)
    st = server.client()
    assert raw_get(server, b"init/") == str(WORLD).encode()
    keys = st.list_keys()
    assert any(k.startswith("default_pg/") for k in keys), keys  # env:// wraps PrefixStore("default_pg")
