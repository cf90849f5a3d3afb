"""One thread count for everything ember runs: TVM's thread pool and oneDNN's OpenMP pool.

Both pools read their size from the environment when they start, so the count is fixed when ember
is imported: EMBER_NUM_THREADS if set, else the number of physical cores this process may use.
Two pools of that size take turns (TVM runs the light ops, oneDNN the heavy ones); sizing both to
the cores is what keeps them from oversubscribing the machine.
"""

from __future__ import annotations

import os
from pathlib import Path


def physical_cores() -> int:
    """Physical cores among the CPUs this process may run on (hyperthread siblings count once)."""
    cpus = sorted(os.sched_getaffinity(0))
    cores = set()
    for cpu in cpus:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            return len(cpus)
        cores.add((package, core))
    return max(1, len(cores))


def configure_from_environment() -> int:
    """Decide the thread count and export it to TVM and OpenMP unless the user set theirs."""
    requested = os.environ.get("EMBER_NUM_THREADS")
    threads = int(requested) if requested and requested.isdigit() and int(requested) > 0 else None
    threads = threads or physical_cores()
    os.environ.setdefault("TVM_NUM_THREADS", str(threads))
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    return int(os.environ["TVM_NUM_THREADS"])
