"""A process's own peak memory, as the kernel counts it.

`VmHWM` (/proc/self/status) is the high-water mark of this process's resident memory since it
was started. Not `ru_maxrss`: Linux keeps that across execve, so a child spawned by a parent
holding 2.5 GB reports 2.5 GB however little it uses itself (found on the L night: the "lake's
2.6 GB peak" was the benchmark's own process, which had just written the history, at the fork).
"""

from __future__ import annotations


def own_peak_rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("/proc/self/status has no VmHWM line (not Linux?)")
