"""Signals of the execution layer, for the floors above it (the guard) that must react without being imported."""

from django.dispatch import Signal

# Sent after the transaction that finished a trade (closed, failed or unwound) commits. Keywords: ``trade`` (the
# PairTrade), ``now`` (the bot's clock) and ``market`` (the bot's market view, or None).
trade_finished = Signal()
