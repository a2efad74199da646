"""What audit and dedup share: pixel verification and re-ranking (``verify``, ``rerank``, ``cache``), text lines
and object masks, thresholds and p-values (``calibration``), null distributions (``null``) and the held-out
reference set (``reference``)."""
