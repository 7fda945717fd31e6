"""The replay's one error type, apart from ``replay.run`` so that its helpers (the lock) raise it too."""


class ReplayError(Exception):
    """The replay can't run as asked (no candles, a bad range, a database or account that isn't fit for it, another
    replay running): the message says what; nothing of the run was written when it is raised before the first bar."""
