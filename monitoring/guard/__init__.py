"""The guard: every minute, after every trade close and at every replay bar it measures each account's equity,
enforces the limits of ``risk`` and runs the detectors of abnormal conditions; and the kill switch."""
