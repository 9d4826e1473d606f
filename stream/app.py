"""``faust -A stream.app worker``: the worker's entry point, as the design names it.

The Faust app, its topics and table are defined in :mod:`stream.worker.app`;
importing :mod:`stream.worker.agents` here registers the agent, its web pages
and timers with it. Nothing else imports this module, so the app module and
the agents never import each other.
"""

from stream.worker import agents  # noqa: F401  (registers the agent, pages and timers)
from stream.worker.app import app

__all__ = ["app"]
