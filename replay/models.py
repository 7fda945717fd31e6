"""What the replay keeps of its own: the lock that lets one replay at a time write to the database."""

from __future__ import annotations

from django.db import models


class ReplayLock(models.Model):
    """The lease of the one replay that may run on this database (one row, ``name`` "replay").

    Two replays at once write the same pairs, signals and paper account bar by bar: on SQLite the results mix, on
    MariaDB they deadlock after partial writes. A lease row works alike on both: taken by one conditional UPDATE,
    renewed while the replay runs, cleared at its end, and it expires on its own when its holder was killed, so a
    dead replay blocks the next one for at most the lease's time to live.
    """

    name = models.CharField(max_length=32, unique=True)
    owner = models.CharField(max_length=200, blank=True, help_text="host:pid:token of the replay holding it")
    description = models.CharField(max_length=300, blank=True, help_text="what that replay runs (account, range)")
    acquired_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(
        null=True, blank=True, help_text="Free when empty or past; the holder renews it while it runs"
    )

    def __str__(self) -> str:
        return f"{self.name}: {self.owner or 'free'}"
