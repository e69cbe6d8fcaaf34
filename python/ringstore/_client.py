# SPDX-License-Identifier: MIT
"""Store clients that come back after the store restarts.

torch's TCPStore client cannot reconnect: once its connection breaks, every
call on it fails. :class:`ResilientClient` holds one such client and, when
a call fails on a connection error, connects a new one (torch's
``ExponentialBackoffWithJitter`` schedule between attempts, within
``reconnect_timeout`` seconds), runs its restore hooks on the new
connection before anything else is sent on it, and then:

* re-sends the call if the caller said it is safe to repeat (GET, CHECK,
  WAIT with what is left of its timeout, MULTI_GET, LIST_KEYS, NUM_KEYS, an
  ADD of 0, and a write that only ever stores one value, such as ``closed``);
* otherwise raises :class:`~ringstore._protocol.Restarted` carrying the
  lost request. An ADD or COMPARE_SET whose reply was lost may or may not
  have been applied; sending it again could apply it twice (etcd clientv3's
  at-most-once rule), so the caller resolves it by reading.

:class:`AgentStore` is the ``RendezvousInfo.store`` handed to torchrun's
agent (role infos, assigned ranks, the exit barrier), a ``dist.Store`` over
its own ResilientClient with the same rule; see its docstring for what it
does with each request.
"""
from __future__ import annotations

import logging
import random
import threading
from datetime import timedelta

import torch.distributed as dist

from ._protocol import Clock, Restarted

log = logging.getLogger("ringstore.rendezvous")

# DistStoreError is a timeout (a WAIT, or a GET of a missing key); every
# other error a TCPStore call raises means the connection is gone.
_TIMEOUT = dist.DistStoreError
_BROKEN = (dist.DistNetworkError, RuntimeError)


class StoreUnreachable(Exception):
    """No connection could be made within reconnect_timeout."""


class Backoff:
    """c10d::ExponentialBackoffWithJitter (torch/csrc/distributed/c10d/
    Backoff.hpp): 0.5 s, x1.5 per attempt, +-50 % jitter, at most 60 s."""

    initial, multiplier, jitter, cap = 0.5, 1.5, 0.5, 60.0

    def __init__(self, rng: random.Random | None = None):
        self._rng = rng or random.Random()
        self._current = self.initial

    def next(self) -> float:
        d = self._current * (1 + self.jitter * (2 * self._rng.random() - 1))
        self._current = min(self._current * self.multiplier, self.cap)
        return d


def tcp_connector(host: str, port: int):
    """connect(timeout seconds) -> a TCPStore client of host:port."""

    def connect(timeout: float):
        return dist.TCPStore(host, port, is_master=False, wait_for_workers=False,
                             timeout=timedelta(seconds=max(timeout, 0.001)))

    return connect


class ResilientClient:
    """One store connection at a time, replaced when it breaks.

    ``generation`` counts reconnects; the rendezvous driver compares it
    before each request, so a reconnect made by another thread (the
    heartbeats) is noticed too. Hooks (``name -> callable(store)``) run on
    each new connection, under the client's lock, before any thread can
    send on it; they use the raw torch client and must not call back.
    """

    def __init__(self, connect, reconnect_timeout: float, op_timeout: float,
                 clock: Clock | None = None, store=None, name: str = "store"):
        self._connect = connect
        self._reconnect_timeout = reconnect_timeout
        self.op_timeout = op_timeout
        self._clock = clock or Clock()
        self._name = name
        self._lock = threading.RLock()
        self._hooks: dict[str, object] = {}
        self._gen = 0
        self._closed = False
        self._store = store if store is not None else self._dial(op_timeout)

    @property
    def generation(self) -> int:
        return self._gen

    def set_hook(self, name: str, hook) -> None:
        with self._lock:
            if hook is None:
                self._hooks.pop(name, None)
            else:
                self._hooks[name] = hook

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self._store = None

    def _dial(self, timeout: float):
        s = self._connect(timeout)
        s.set_timeout(timedelta(seconds=self.op_timeout))
        return s

    def call(self, op: str, *args, resend: bool):
        """``getattr(torch client, op)(*args)``. On a broken connection:
        reconnect, then re-send (resend=True) or raise Restarted(lost op)."""
        while True:
            with self._lock:
                if self._closed:
                    raise StoreUnreachable(f"{self._name}: client closed")
                store, gen = self._store, self._gen
            try:
                return getattr(store, op)(*args)
            except _TIMEOUT:
                raise
            except _BROKEN as e:
                self._recover(gen, e)
                if not resend:
                    raise Restarted((op, args)) from e

    def _recover(self, gen: int, err: Exception) -> None:
        with self._lock:
            if self._gen != gen or self._closed:
                return  # another thread reconnected already
            log.warning("%s: connection lost (%s); reconnecting for up to %gs",
                        self._name, str(err).splitlines()[0][:200], self._reconnect_timeout)
            deadline = self._clock.monotonic() + self._reconnect_timeout
            backoff = Backoff()
            attempts = 0
            while True:
                left = deadline - self._clock.monotonic()
                if left <= 0:
                    raise StoreUnreachable(
                        f"{self._name}: no connection within reconnect_timeout="
                        f"{self._reconnect_timeout:g}s ({attempts} attempts): {err}") from err
                attempts += 1
                try:
                    # torch's client retries its own connect within `left`
                    store = self._dial(min(left, self.op_timeout))
                    for hook in list(self._hooks.values()):
                        hook(store)
                except _TIMEOUT as e:
                    err = e
                except (*_BROKEN, ValueError, TimeoutError) as e:
                    err = e
                else:
                    self._store = store
                    self._gen += 1
                    log.warning("%s: reconnected after %d attempt(s)", self._name, attempts)
                    return
                self._clock.sleep(min(backoff.next(), max(0.0, deadline - self._clock.monotonic())))


def execute(store, op, timeout_cls, wait_timeout_cls):
    """Run one protocol Op on a raw torch client (hooks)."""
    kind, args = op
    try:
        return getattr(store, kind)(*_torch_args(kind, args))
    except _TIMEOUT as e:
        raise (wait_timeout_cls if kind == "wait" else timeout_cls)(str(e)) from e


def _torch_args(kind, args):
    if kind == "wait" and len(args) == 2:
        return args[0], timedelta(seconds=args[1])
    return args


class AgentStore(dist.Store):
    """``RendezvousInfo.store``: the agents' keys under ``<round>/agent/``
    (PrefixStore's "<prefix>/<key>"), over a ResilientClient.

    torch's agent code (agent/server/api.py, utils/store.py) uses set,
    get, multi_get, multi_set, add (the exit barrier), wait, and the
    timeout property with set_timeout. After a reconnect:

    * reads (get, check, wait, multi_get, num_keys) are re-sent; a wait gets
      what is left of its timeout;
    * set and multi_set are journaled before they are sent, and every new
      connection re-creates each journaled key the store no longer holds
      (COMPARE_SET from empty: never over a value someone else wrote). The
      keys torch writes here have one writer each (role_info/<rank>,
      assigned_ranks/* by rank 0) or one value (the barrier's last_member),
      so this restores what a restart lost without overwriting anything;
    * an add is preceded by a CHECK (re-sent if need be), so a connection
      that died while idle (a restart during training) is replaced before
      the add is sent; an add whose reply is lost all the same raises
      DistNetworkError: it may have been applied, and applying it twice would
      miscount. torch's exit barrier is the only add; the agent logs the
      failure and exits normally;
    * a compare_set whose reply was lost is resolved by reading: the key's
      value if it exists, an error if not.
    """

    def __init__(self, prefix: str, client: ResilientClient):
        super().__init__()
        self._prefix = prefix + "/"
        self._client = client
        self._journal: dict[str, object] = {}
        self._jlock = threading.Lock()
        client.set_hook("journal", self._restore)

    def _k(self, key: str) -> str:
        return self._prefix + key

    def _restore(self, store) -> None:
        with self._jlock:
            items = list(self._journal.items())
        for key, value in items:
            store.compare_set(key, "", value)

    def retire(self) -> None:
        """The round is over for this agent: drop the connection."""
        self._client.close()

    # -- timeout (utils/store.py's store_timeout reads and sets it)
    @property
    def timeout(self) -> timedelta:
        return timedelta(seconds=self._client.op_timeout)

    def set_timeout(self, timeout: timedelta) -> None:
        self._client.op_timeout = timeout.total_seconds()
        self._client.call("set_timeout", timeout, resend=True)

    # -- reads
    def get(self, key):
        return self._client.call("get", self._k(key), resend=True)

    def check(self, keys):
        return self._client.call("check", [self._k(k) for k in keys], resend=True)

    def multi_get(self, keys):
        return self._client.call("multi_get", [self._k(k) for k in keys], resend=True)

    def num_keys(self):
        return self._client.call("num_keys", resend=True)

    def wait(self, keys, timeout: timedelta | None = None):
        full = [self._k(k) for k in keys]
        if timeout is None:
            timeout = self.timeout
        clock = self._client._clock
        end = clock.monotonic() + timeout.total_seconds()
        while True:
            gen = self._client.generation
            left = max(end - clock.monotonic(), 0.001)
            try:
                return self._client.call("wait", full, timedelta(seconds=left), resend=False)
            except Restarted:
                if self._client.generation == gen:
                    raise

    # -- writes
    def set(self, key, value):
        full = self._k(key)
        with self._jlock:
            self._journal[full] = value
        try:
            self._client.call("set", full, value, resend=False)
        except Restarted:
            pass  # the reconnect's journal restore re-created it if it was lost

    def multi_set(self, keys, values):
        full = [self._k(k) for k in keys]
        with self._jlock:
            self._journal.update(zip(full, values))
        try:
            self._client.call("multi_set", full, list(values), resend=False)
        except Restarted:
            pass  # as set()

    def _probe(self) -> None:
        """Before a write that is not re-sent: an idle connection may have
        died in a restart long ago (the exit barrier's ADD comes after the
        whole training run). A CHECK, re-sent as needed, replaces it, so the
        write is only ambiguous if the store restarts between the two."""
        self._client.call("check", [self._prefix], resend=True)

    def add(self, key, amount):
        if amount == 0:
            return self._client.call("add", self._k(key), 0, resend=True)
        self._probe()
        try:
            return self._client.call("add", self._k(key), amount, resend=False)
        except Restarted as e:
            raise dist.DistNetworkError(
                f"ringstore: the reply to ADD {key} {amount} was lost in a store "
                "restart; it may or may not have been applied, and is not re-sent") from e

    def compare_set(self, key, expected, desired):
        full = self._k(key)
        self._probe()
        try:
            return self._client.call("compare_set", full, expected, desired, resend=False)
        except Restarted as e:
            if self._client.call("check", [full], resend=True):
                return self._client.call("get", full, resend=True)
            raise dist.DistNetworkError(
                f"ringstore: the reply to COMPARE_SET {key} was lost in a store restart "
                "and the key does not exist") from e

    def delete_key(self, key):
        return self._client.call("delete_key", self._k(key), resend=True)
