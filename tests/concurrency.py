"""Running the same work in two threads at once, each on its own database connection (a server database: two
processes racing, as two workers or a worker and the web do)."""

from __future__ import annotations

import threading
from collections.abc import Callable

from django.db import connection


def twice_at_once(work: Callable[[], object], *, timeout_s: float = 30) -> list[Exception]:
    """Start ``work`` in two threads released together; the errors they raised (none: an empty list)."""
    start = threading.Barrier(2)
    errors: list[Exception] = []

    def run() -> None:
        try:
            start.wait()
            work()
        except Exception as exc:  # noqa: BLE001 - returned to the test
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout_s)
    return errors
