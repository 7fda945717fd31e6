"""One account's bot, split along its seams: ``lease`` (one bot per account), ``tick`` (the order of a tick),
``book`` (the trades a tick holds), ``reconcile`` (database against exchange), ``funding``, ``exits`` (which trades
close and why) and ``entries`` (which signals open trades, within halts and limits). The trade state machine the
bot drives lives in ``execution.services.trades``."""
