"""Permission names shared across the apps, as strings (no app on a lower floor imports the app that defines them).

Its own module so that what only needs a name (the admin) does not import the API stack of ``core.api``.
"""

READ_API = "monitoring.read_api"
