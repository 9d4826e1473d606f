"""``faust -A stream.app worker``: the worker's entry point, as the design names it.

The Faust app, its topics and table are defined in :mod:`stream.worker.app`;
importing :mod:`stream.worker.agents` and :mod:`stream.worker.pages` here
registers the agent, the web pages and the self-check timer with it. Nothing
else imports this module, so the app module and the agent never import each
other.
"""

from stream.worker import agents, pages  # noqa: F401  (register the agent, pages, timer)
from stream.worker.app import app

__all__ = ["app"]
