"""Signals of the risk policy. Risk stands below the floors that notify people; they listen here instead."""

from django.dispatch import Signal

# Sent after the transaction that raised or cleared a halt commits; keyword ``halt``.
halt_raised = Signal()
halt_cleared = Signal()
