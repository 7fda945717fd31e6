from datetime import UTC, datetime, timedelta

from pairs.marketdata.funding import settlement_times


def test_settlement_times():
    day = datetime(2021, 3, 1, tzinfo=UTC)
    assert list(settlement_times(day.replace(hour=7), day.replace(hour=16), 480)) == [
        day.replace(hour=8), day.replace(hour=16)]  # fmt: skip
    assert list(settlement_times(day.replace(hour=8), day.replace(hour=8), 480)) == []
    assert list(settlement_times(day, day + timedelta(hours=9), 240)) == [day.replace(hour=h) for h in (4, 8)]
