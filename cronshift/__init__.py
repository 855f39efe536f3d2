"""cronshift: move cron jobs, safely and provably, to event-driven Celery tasks.

Kept free of imports: `cronshift record` runs on every cron run and must start fast.
"""

__version__ = "0.1.0"
