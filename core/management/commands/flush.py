"""Django's ``flush``, refused where ``STATARB_REFUSE_FLUSH`` is set (production): it empties every table, the
audit trail, trades, orders and fills included, which no one running real money asks of a command; the refusal is
audited. Elsewhere (a development or test database) it is Django's, unaudited: the trail it empties can't keep an
entry of it."""

from django.conf import settings
from django.core.management.base import CommandError
from django.core.management.commands import flush

from core.command_audit import CommandAudit


class Command(CommandAudit, flush.Command):
    def handle(self, **options):
        if getattr(settings, "STATARB_REFUSE_FLUSH", False):
            self.audit((), options, details={}, action="refused",
                       summary="manage.py flush refused: it would erase the audit trail and every trade, order and "
                               "fill (STATARB_REFUSE_FLUSH)")
            raise CommandError(
                "flush is refused on this database (STATARB_REFUSE_FLUSH, set by the production settings): it would "
                "erase the audit trail and every trade, order and fill. To start over, drop and create the database "
                "with the database's own tools, then run migrate.")
        return super().handle(**options)
