"""The paper exchange: a simulated Bybit for paper accounts, kept in execution's tables (``exchange``), built on its
account's lookups and locks (``base``), its funding settlement (``funding``) and exact arithmetic (``book``)."""
