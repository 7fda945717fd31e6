"""In-process fakes of external services, for tests. Nothing here talks to anything but 127.0.0.1."""
