from tests.execution.services.test_bot_queries import BotMarket, measure
import pytest
@pytest.mark.django_db
def test_explore():
    market = BotMarket()
    market.grow(instruments=10, pairs=5, trades=2)
    small = measure(market)
    market.grow(instruments=60, pairs=95, trades=18)
    large = measure(market)
    for name in ("steady", "reconcile"):
        print("=====", name, small[name], large[name])
        for q in large[name + "_sql"]:
            print("  ", q[:230])
