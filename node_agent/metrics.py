"""Host metrics with psutil: what the controller shows as node load and uses for placement."""

from __future__ import annotations

import datetime as dt
import os
import time
from dataclasses import dataclass
from pathlib import Path

import psutil


@dataclass(frozen=True, slots=True)
class HostMetrics:
    sampled_at: dt.datetime
    cpu_percent: float
    cpu_count: int
    memory_total: int
    memory_used: int
    disk_total: int
    disk_used: int
    network_rx: int
    network_tx: int
    load: tuple[float, float, float]
    uptime_seconds: int
    clients_online: int


class MetricsCollector:
    def __init__(self, disk_path: Path = Path("/")) -> None:
        self.disk_path = disk_path
        # cpu_percent(None) measures since the previous call: prime it so the first answer
        # is a real figure, not 0.0.
        psutil.cpu_percent(interval=None)

    def sample(self, clients_online: int) -> HostMetrics:
        memory = psutil.virtual_memory()
        disk = psutil.disk_usage(str(self.disk_path))
        net = psutil.net_io_counters(pernic=False)
        return HostMetrics(
            sampled_at=dt.datetime.now(dt.UTC),
            cpu_percent=float(psutil.cpu_percent(interval=None)),
            cpu_count=psutil.cpu_count() or 1,
            memory_total=int(memory.total),
            memory_used=int(memory.total - memory.available),
            disk_total=int(disk.total),
            disk_used=int(disk.used),
            network_rx=int(net.bytes_recv) if net else 0,
            network_tx=int(net.bytes_sent) if net else 0,
            load=os.getloadavg(),
            uptime_seconds=max(0, int(time.time() - psutil.boot_time())),
            clients_online=clients_online,
        )
