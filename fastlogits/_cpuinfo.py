"""The host CPU as /proc/cpuinfo names it (Linux; empty elsewhere).

Read once per call, at import time by :mod:`fastlogits.config` (a few
tunables differ between CPU vendors) and by ``fastlogits info`` and the
benchmark report (the model name).
"""

#: /proc/cpuinfo's ``vendor_id`` values, and the short names used here.
VENDORS = {"AuthenticAMD": "amd", "GenuineIntel": "intel"}


def field(name):
    """The first ``name : value`` line's value in /proc/cpuinfo, or ""."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(name):
                    key, _, value = line.partition(":")
                    if key.strip() == name:
                        return value.strip()
    except OSError:
        pass
    return ""


def vendor():
    """``"amd"``, ``"intel"`` or ``""`` (another vendor, or unknown)."""
    return VENDORS.get(field("vendor_id"), "")
