from tests.fakes.telegram import fake_telegram  # noqa: F401
