# SPDX-License-Identifier: MIT
"""Give env:// workers the per-job, per-round key prefix of their rendezvous.

torchrun's workers learn only MASTER_ADDR/MASTER_PORT; with
TORCHELASTIC_USE_AGENT_STORE=True, ``init_process_group()`` builds a plain
TCPStore client of that address, so every round of every job would share one
key space on the long-lived store, and a restarted round would read the gloo
addresses the previous round left there. The ringstore handler therefore puts
``RINGSTORE_WORKER_PREFIX=rdzv/<run>/<round>/worker`` in the agent's
environment, which its workers inherit, and the ``ringstore-worker-prefix.pth``
line imports this module in exactly those processes. It wraps
``torch.distributed.rendezvous._create_c10d_store`` once that module loads, so
that the agent-store case returns ``PrefixStore(prefix, store)``. Nothing is
imported eagerly, and any failure leaves torch untouched (with a warning).

Every torch version needs it, 2.14 and 2.15 included. Their
``_agent_store_serves(hostname, port)`` only narrows when the agent's store is
used (MASTER_ADDR and MASTER_PORT must be the ones given); the store torch
then builds is still a plain client under the fixed prefix
``/worker/attempt_<restart count>``, which repeats across the rounds that a
membership change starts (no restart is counted) and is shared by every job
on the store. The hook decides as torch does: with ``_agent_store_serves``
where it exists, else ``_torchelastic_use_agent_store()`` (2.13).
"""
import importlib.abc
import importlib.machinery
import os
import sys
import warnings

ENV = "RINGSTORE_WORKER_PREFIX"
TARGET = "torch.distributed.rendezvous"


def _patch(mod) -> None:
    orig = mod._create_c10d_store
    if getattr(orig, "_ringstore_prefix", False):
        return

    serves = getattr(mod, "_agent_store_serves", None)  # torch >= 2.14

    def _create_c10d_store(hostname, port, *args, **kwargs):
        store = orig(hostname, port, *args, **kwargs)
        prefix = os.environ.get(ENV)
        agent = (serves(hostname, port) if serves is not None
                 else mod._torchelastic_use_agent_store())
        if prefix and agent:
            from torch.distributed import PrefixStore

            return PrefixStore(prefix, store)
        return store

    _create_c10d_store._ringstore_prefix = True
    mod._create_c10d_store = _create_c10d_store


class _Loader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        self._inner.exec_module(module)
        try:
            _patch(module)
        except Exception as e:  # never break torch's import
            warnings.warn(f"ringstore: cannot prefix the workers' store: {e!r}")


class _Finder(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name != TARGET:
            return None
        sys.meta_path.remove(self)
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None:
            spec.loader = _Loader(spec.loader)
        return spec


def _install() -> None:
    if TARGET in sys.modules:
        _patch(sys.modules[TARGET])
    elif not any(isinstance(f, _Finder) for f in sys.meta_path):
        sys.meta_path.insert(0, _Finder())


try:
    _install()
except Exception as e:  # never break interpreter start-up
    warnings.warn(f"ringstore: worker prefix hook not installed: {e!r}")
