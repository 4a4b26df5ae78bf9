"""Channel workers: read delivery jobs, await the channel's ``send``, settle each job
(loop.py; settling.py and health.py are its two other halves, base.py what they share)."""

from .base import INTERNAL_PROVIDER, RECLAIM_INTERVAL
from .loop import Worker

__all__ = ["INTERNAL_PROVIDER", "RECLAIM_INTERVAL", "Worker"]
