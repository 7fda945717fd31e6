"""The paper exchange's tables, part of the execution app's models (``execution.models`` imports them)."""

from django.db import models

from core.db import decimal_field

# ------------------------------------------------------------------------------------------------- paper exchange
# What a paper account's simulated exchange knows: its own orders, fills, positions, balance and funding, kept
# apart from the bot's tables so that reconciliation compares two independent records, as it does on Bybit.


class PaperAccount(models.Model):
    """The simulated exchange's balance of one paper account."""

    account = models.OneToOneField("execution.ExchangeAccount", on_delete=models.CASCADE, related_name="paper")
    wallet_balance = decimal_field(help_text="Deposits plus realised PnL, minus fees, plus funding")
    funding_settled_until = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"paper {self.account_id}: {self.wallet_balance}"


class PaperPosition(models.Model):
    account = models.ForeignKey("execution.ExchangeAccount", on_delete=models.CASCADE, related_name="paper_positions")
    symbol = models.CharField(max_length=64)
    qty = decimal_field(default=0, help_text="Signed: positive long, negative short")
    avg_price = decimal_field(default=0)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["account", "symbol"], name="paperpos_account_symbol_uniq")]

    def __str__(self) -> str:
        return f"{self.symbol} {self.qty}@{self.avg_price}"


class PaperOrder(models.Model):
    account = models.ForeignKey("execution.ExchangeAccount", on_delete=models.CASCADE, related_name="paper_orders")
    client_order_id = models.CharField(max_length=36)
    symbol = models.CharField(max_length=64)
    side = models.CharField(max_length=4)
    order_type = models.CharField(max_length=8, default="market")
    qty = decimal_field()
    filled_qty = decimal_field(default=0)
    avg_price = decimal_field(null=True, blank=True)
    fee = decimal_field(default=0)
    status = models.CharField(max_length=16)
    reduce_only = models.BooleanField(default=False)
    reject_reason = models.CharField(max_length=200, blank=True)
    created_at = models.DateTimeField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "client_order_id"], name="paperorder_account_client_uniq")
        ]

    def __str__(self) -> str:
        return f"paper order {self.client_order_id}"


class PaperFill(models.Model):
    order = models.ForeignKey(PaperOrder, on_delete=models.CASCADE, related_name="fills")
    qty = decimal_field()
    price = decimal_field()
    fee = decimal_field()
    filled_at = models.DateTimeField()

    def __str__(self) -> str:
        return f"paper fill {self.qty}@{self.price}"


class PaperFunding(models.Model):
    account = models.ForeignKey("execution.ExchangeAccount", on_delete=models.CASCADE, related_name="paper_funding")
    symbol = models.CharField(max_length=64)
    settled_at = models.DateTimeField()
    rate = decimal_field()
    position_qty = decimal_field()
    mark_price = decimal_field()
    amount = decimal_field(help_text="Received (+) or paid (-)")

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["account", "symbol", "settled_at"], name="paperfunding_uniq")
        ]
        # Settlements are read by account and time range (what is paid already, funding_payments).
        indexes = [models.Index(fields=["account", "settled_at"], name="paperfunding_account_time_idx")]

    def __str__(self) -> str:
        return f"paper funding {self.symbol} {self.settled_at:%Y-%m-%d %H:%M} {self.amount}"
