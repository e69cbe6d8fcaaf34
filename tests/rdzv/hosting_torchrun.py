# SPDX-License-Identifier: MIT
"""torchrun whose ringstore backend hosts its own store: test scaffolding.

Usage: hosting_torchrun.py TORCHRUN-ARGS...  (as ``python -m torch.distributed.run``)

Until ringstore/rendezvous.py's create_handler() calls
``ringstore._host.ensure_store_for(params, default_port=DEFAULT_PORT)`` itself,
this launcher stands in for that one call: it replaces the creator that the
``torchrun.handlers`` entry point registered for "ringstore" with one that
makes the call first, then runs torchrun in this process. Once the handler
makes the call, test_host.py can run ``python -m torch.distributed.run``
and this file goes. The ``ringstore`` logger prints INFO to stderr, so the
agent's log says whether it started the store or found it.
"""
import logging
import sys

from torch.distributed.elastic.rendezvous import rendezvous_handler_registry
from torch.distributed.run import main

from ringstore import rendezvous
from ringstore._host import ensure_store_for


def create_handler(params):
    ensure_store_for(params, default_port=rendezvous.DEFAULT_PORT)
    return rendezvous.create_handler(params)


if __name__ == "__main__":
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    logging.getLogger("ringstore").addHandler(handler)
    logging.getLogger("ringstore").setLevel(logging.INFO)
    # register() refuses a second creator for a name: replace it
    rendezvous_handler_registry._registry[rendezvous.BACKEND_NAME] = create_handler
    sys.exit(main())
