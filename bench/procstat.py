"""What a server costs, read from /proc.

A server is measured as its whole process group: nginx does its work in a
worker forked by the master, and a multi-process mediaproxy forks too, so the
pid we started is not where the CPU goes. Every server is started in its own
session (see servers.py), which makes the group exactly "this server".

CPU is utime+stime from /proc/<pid>/stat, which covers every thread of the
process (executor threads included). Its resolution is one clock tick (10 ms
at the usual CLK_TCK of 100): fine for transfers that take a second or more.

Peak memory is VmHWM from /proc/<pid>/status. Writing "5" to
/proc/<pid>/clear_refs resets that high-water mark to the current RSS, so a
peak can be taken per repetition instead of since the process started.
"""

import os

_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def group_pids(pgid: int) -> list[int]:
    """Return the live pids whose process group is `pgid`."""
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields is not None and int(fields[4]) == pgid:
            pids.append(int(entry))
    return pids


def group_cpu_s(pgid: int) -> float:
    """Return the user+system CPU seconds used so far by the live processes of a group."""
    ticks = 0
    for pid in group_pids(pgid):
        fields = _stat_fields(pid)
        if fields is not None:
            ticks += int(fields[13]) + int(fields[14])
    return ticks / _CLOCK_TICKS_PER_S


def reset_group_peak_rss(pgid: int) -> None:
    """Make every process's VmHWM start again from its current RSS."""
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/clear_refs", "w") as clear_refs:
                clear_refs.write("5")
        except (FileNotFoundError, ProcessLookupError):
            pass  # the process exited in between: it has no peak left to reset


def group_peak_rss_bytes(pgid: int) -> int:
    """Return the sum of the VmHWM of the group's processes.

    The peaks of two processes need not coincide, so for a multi-process
    server this is an upper bound; for nginx the master adds a constant ~1 MB.
    """
    total_kib = 0
    for pid in group_pids(pgid):
        try:
            with open(f"/proc/{pid}/status") as status:
                for line in status:
                    if line.startswith("VmHWM:"):
                        total_kib += int(line.split()[1])
                        break
        except (FileNotFoundError, ProcessLookupError):
            pass
    return total_kib * 1024


def _stat_fields(pid: int) -> list[str] | None:
    """Return the fields of /proc/<pid>/stat, numbered as in proc(5) minus one.

    The command name (field 2) may contain spaces and parentheses, so the
    fields are split after its closing parenthesis; the two dropped fields
    are put back as placeholders to keep proc(5)'s numbering.
    """
    try:
        with open(f"/proc/{pid}/stat") as stat:
            text = stat.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    after_name = text[text.rindex(")") + 2 :].split()
    return ["pid", "comm"] + after_name
