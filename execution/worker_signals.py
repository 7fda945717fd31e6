"""A worker that stops gives back the accounts' leases its process holds (Celery's worker_shutdown, in the main
process: the solo pool of the account queues, and worker_process_shutdown in a prefork child).

A lease that its holder no longer renews expires on its own (``LEASE_TTL``, 2 minutes): that is for a process that
dies. A process stopped on purpose (an upgrade, new keys, ``systemctl restart``) runs these after its last task
ended, so the next worker of the account trades at its first tick instead of answering "locked" until the lease
runs out. A database that is gone at shutdown only costs that (logged), never the shutdown.
"""

from __future__ import annotations

import logging

from celery.signals import worker_process_shutdown, worker_shutdown
from django.db import DatabaseError

from execution.bot.lease import default_lease_owner, leases_release

logger = logging.getLogger(__name__)


@worker_shutdown.connect(dispatch_uid="execution.release_leases")
@worker_process_shutdown.connect(dispatch_uid="execution.release_process_leases")
def release_leases(**kwargs) -> None:
    try:
        released = leases_release(default_lease_owner())
    except DatabaseError:
        logger.exception("could not give back the accounts' leases at shutdown; they expire on their own")
        return
    if released:
        logger.info("gave back %d account lease(s) at shutdown", released)
