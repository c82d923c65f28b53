"""What this x86 CPU offers oneDNN: /proc/cpuinfo's flags, under the ISA cap a user may set.

``ONEDNN_MAX_CPU_ISA`` (or the older ``DNNL_MAX_CPU_ISA``) holds oneDNN below
what the CPU has, by choice or to stand in for an older CPU. A feature counts
only where the CPU has it and the cap lets oneDNN use it; under a cap this
module does not know no flag counts, so the answers err on the side of fp32.
"""

from __future__ import annotations

import os

# the caps (oneDNN's ISA names) under which each flag's instructions may run; "" is no cap
_ALLOWED_BY = {
    "avx2": ("", "avx2", "avx2_vnni", "avx2_vnni_2", "avx512_core", "avx512_core_vnni", "avx512_core_bf16",
             "avx512_core_fp16", "avx512_core_amx", "avx512_core_amx_fp16"),
    "avx_vnni": ("", "avx2_vnni", "avx2_vnni_2"),
    "avx512_vnni": ("", "avx512_core_vnni", "avx512_core_bf16", "avx512_core_fp16", "avx512_core_amx",
                    "avx512_core_amx_fp16"),
    "avx512_bf16": ("", "avx512_core_bf16", "avx512_core_fp16", "avx512_core_amx", "avx512_core_amx_fp16"),
    "amx_int8": ("", "avx512_core_amx", "avx512_core_amx_fp16"),
    "amx_bf16": ("", "avx512_core_amx", "avx512_core_amx_fp16"),
}


def flags() -> set[str] | None:
    """The CPU's feature flags (Linux); None where /proc/cpuinfo cannot be read."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        return None
    return set()


def isa_cap() -> str:
    """oneDNN's ISA cap, lower case; "" when there is none."""
    for var in ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA"):
        cap = os.environ.get(var, "").strip().lower()
        if cap:
            return "" if cap in ("all", "default") else cap
    return ""


def usable(*wanted: str) -> bool:
    """Whether oneDNN may use any of the ``wanted`` flags here: the CPU has it and the cap allows it."""
    have, cap = flags(), isa_cap()
    return bool(have) and any(f in have and cap in _ALLOWED_BY[f] for f in wanted)
