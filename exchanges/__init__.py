"""The venue layer: the only code that imports ccxt.

``ccxt_client`` builds clients, maps ccxt's errors onto ours (``errors``) and reads public market data; ``bybit``
holds Bybit v5's order side (orderLinkId, retCodes, positionIdx, order states, pagination) in its own subclass, the
way freqtrade keeps a venue's quirks apart; ``validation`` checks order arguments for every adapter; ``retry``
wraps a venue once so that temporary errors are retried in one place. Everything above this package sees only
``types`` and ``errors``, never a ccxt structure.
"""
