"""The shared kernel: column types, secrets, log redaction, the clock and formatting helpers. Imports only Django."""
