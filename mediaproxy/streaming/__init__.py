"""What bounds time and memory for any stream: timers, pacing, chunk budgets, compression,
thread pools, disk reads and content sniffing. Imports only ``http``, ``config`` and ``errors``."""
