"""What machine and JAX backend a result came from (recorded in every output's meta)."""

from __future__ import annotations

import os
import platform

import jax


# instruction-set extensions that change XLA:CPU's generated code (vector width, FMA), and so a learned method's
# results in their last bits, which training amplifies (docs/robustness.md: the same code on two AMD EPYC machines)
ISA_FLAGS = ("sse4_2", "avx", "avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "asimd", "sve")


def cpu_identity(cpuinfo: str = "/proc/cpuinfo") -> dict:
    """The CPU as /proc/cpuinfo names it: ``cpu`` (model name), ``cpu_signature`` (vendor, family, model, stepping)
    and ``cpu_isa`` (which of ``ISA_FLAGS`` it has). A virtual machine's model name can be generic ("AMD EPYC"); the
    signature and the ISA tell two such machines apart."""
    out = {"cpu": platform.processor() or platform.machine(), "cpu_signature": None, "cpu_isa": None}
    fields = {}
    try:
        for line in open(cpuinfo):
            if not line.strip():
                break  # the first processor's block
            k, _, v = line.partition(":")
            fields[k.strip()] = v.strip()
    except OSError:
        return out
    out["cpu"] = fields.get("model name", out["cpu"])
    sig = {k: fields[k] for k in ("vendor_id", "cpu family", "model", "stepping") if k in fields}
    out["cpu_signature"] = sig or None
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    out["cpu_isa"] = [f for f in ISA_FLAGS if f in flags] if flags else None
    return out


def host_description() -> dict:
    dev = jax.devices()
    ident = cpu_identity()
    return {
        "jax_version": jax.__version__,
        "backend": jax.default_backend(),
        "devices": [str(d) for d in dev],
        "device_kind": dev[0].device_kind,
        **ident,
        "cpu_count": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
