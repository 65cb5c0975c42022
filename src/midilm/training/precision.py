"""Which arithmetic a training run uses, chosen for the machine.

``"auto"`` means mixed precision wherever the hardware does it natively:

- **CUDA**: bf16 autocast when the GPU supports bf16 (Ampere and later), else fp16 autocast
  with loss scaling (the seed's fp16 run);
- **CPU**: bf16 autocast when the cores have native bf16 arithmetic (AVX512-BF16 or AMX on
  x86, the BF16 extension on Arm), else fp32. On the 2-core AVX512-BF16 machine midilm is
  developed on, a whole mmm-gpt2 training step runs about 1.8× faster in bf16 than in fp32
  (1.5× with attention dropout, whose unfused CPU path bf16 barely speeds up); without
  native support bf16 is emulated (usually slower than fp32), so it is not chosen;
- anything else (Apple MPS): fp32.

Weights and optimizer state stay fp32 in every mode; only the forward/backward arithmetic
changes. Nothing here knows about models or data.
"""

from __future__ import annotations

import contextlib
import platform
from pathlib import Path
from typing import Literal

from midilm.errors import ConfigError

__all__ = ["Resolved", "auto_precision", "autocast", "cpu_has_native_bf16", "resolve_precision"]

Resolved = Literal["fp32", "bf16", "fp16"]


def cpu_has_native_bf16() -> bool:
    """True when the CPU computes in bf16 natively (not by emulation)."""
    import torch

    probes = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    for name in probes:
        probe = getattr(torch.cpu, name, None)  # private, but the only test torch offers
        if probe is not None and probe():
            return True
    if platform.machine().lower() in ("aarch64", "arm64"):
        cpuinfo = Path("/proc/cpuinfo")
        try:
            text = cpuinfo.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return False
        return any(
            line.startswith("Features") and " bf16" in f"{line} " for line in text.splitlines()
        )
    return False


def auto_precision(device_type: str) -> Resolved:
    """The mixed precision ``"auto"`` means on a device type (``"cuda"``, ``"cpu"``…)."""
    import torch

    if device_type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if device_type == "cpu":
        return "bf16" if cpu_has_native_bf16() else "fp32"
    return "fp32"


def resolve_precision(requested: str, device_type: str) -> Resolved:
    """``requested`` (auto, fp32, bf16, fp16) made concrete for ``device_type``; a clear
    error for a precision the device cannot run."""
    import torch

    if requested == "auto":
        return auto_precision(device_type)
    if requested not in ("fp32", "bf16", "fp16"):
        raise ConfigError(f"precision must be auto, fp32, bf16 or fp16, received {requested!r}")
    if requested == "bf16" and device_type == "cuda" and not torch.cuda.is_bf16_supported():
        raise ConfigError("precision bf16: this GPU has no bf16 support; use fp16 or auto")
    if requested != "fp32" and device_type not in ("cuda", "cpu"):
        raise ConfigError(f"precision {requested}: mixed precision needs a CUDA GPU or a CPU")
    return requested  # type: ignore[return-value]


def autocast(precision: Resolved, device_type: str) -> contextlib.AbstractContextManager:
    """The autocast context of a resolved precision (a no-op for fp32)."""
    import torch

    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type, dtype=dtype)
