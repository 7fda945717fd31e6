#!/usr/bin/env python
"""Django's command-line utility for statarb."""
import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "statarb_site.settings.local")
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
    from core.commands import exit_if_teardown_skipped

    exit_if_teardown_skipped()  # a batch command may end here, without the interpreter's teardown


if __name__ == "__main__":
    main()
