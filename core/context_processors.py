"""Template context every page gets."""

from __future__ import annotations

from core.market_clock import stored_clock_state


def stored_clock(request) -> dict:
    """The demo's stored-data clock (None unless STATARB_MARKET_CLOCK=stored): every page says the account trades on
    stored data, where the clock stands, and when the data ran out."""
    return {"stored_clock": stored_clock_state()}
