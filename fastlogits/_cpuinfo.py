"""The host CPU as /proc/cpuinfo and sysfs name it (Linux; empty
elsewhere).

Read once per call, at import time by :mod:`fastlogits.tuning` (a few
tunables differ between CPU vendors or follow the L2 cache's size) and
by :mod:`fastlogits.machine`, the public face of these facts for
``fastlogits info`` and the benchmark report (the model name).
"""

#: Where Linux describes CPU 0's caches: ``index*/level``, ``type``, ``size``.
CACHE_DIR = "/sys/devices/system/cpu/cpu0/cache"

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


def _cache_size(text):
    """Bytes of a sysfs cache ``size`` ("2048K", "1M", "512"); 0 if unreadable."""
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    digits = text[:-1] if scale > 1 else text
    return int(digits) * scale if digits.isdigit() else 0


def l2_bytes(cache_dir=CACHE_DIR):
    """Bytes of CPU 0's L2 cache (data or unified), or 0 where unknown."""
    import os

    try:
        names = sorted(os.listdir(cache_dir))
    except OSError:
        return 0
    for name in names:
        try:
            with open(os.path.join(cache_dir, name, "level")) as f:
                level = f.read().strip()
            with open(os.path.join(cache_dir, name, "type")) as f:
                kind = f.read().strip()
            with open(os.path.join(cache_dir, name, "size")) as f:
                size = _cache_size(f.read())
        except OSError:
            continue
        if level == "2" and kind in ("Data", "Unified"):
            return size
    return 0
