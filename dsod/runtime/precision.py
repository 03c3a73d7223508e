"""The precision a network runs in: one setting (``train.amp``, ``--amp``), named here once.

``"none"`` is fp32; ``"bf16"`` and ``"fp16"`` run under ``torch.autocast`` to that dtype;
``"auto"`` chooses for the machine (:func:`resolve_amp`):

* on a CPU with native bf16 (AVX512-BF16 or AMX), bf16, which trains faster than fp32
  there;
* on any other CPU (AVX2 only: most laptops and many cloud machines), fp32: bf16 is
  emulated there and its convolutions are several times slower than fp32;
* on a GPU, fp16 with loss scaling, which trains faster than bf16.

The words ``train.amp`` accepts are the config's (:data:`dsod.config.rules.AMP_SETTINGS`);
the measurements behind each choice are in docs/PERFORMANCE.md ("Precision by CPU").
"""

from __future__ import annotations

import contextlib
import functools
import logging
from pathlib import Path

import torch

from dsod.config.rules import AMP_SETTINGS, PRECISIONS

logger = logging.getLogger(__name__)

__all__ = [
    "AMP_DTYPES",
    "AMP_SETTINGS",
    "PRECISION_NAMES",
    "amp_dtype",
    "amp_setting",
    "autocast_context",
    "cpu_has_native_bf16",
    "precision_name",
    "resolve_amp",
]

_DTYPES: dict[str, torch.dtype | None] = {
    "none": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
}

AMP_DTYPES: dict[str, torch.dtype | None] = {amp: _DTYPES[amp] for amp in PRECISIONS}
"""The autocast dtype of each precision the config names (:data:`~dsod.config.rules.PRECISIONS`,
``"auto"`` resolved), None for fp32."""

SLOW_BF16_WARNING = (
    "train.amp=bf16 on a CPU without native bf16 (no AVX512-BF16, no AMX): bf16 is emulated "
    "here, and its convolutions ran 6-10 times slower than fp32 on such a CPU "
    "(docs/PERFORMANCE.md); train.amp=auto (or none) runs fp32"
)


def amp_dtype(amp: str) -> torch.dtype | None:
    """The autocast dtype of a resolved ``amp`` setting; None for ``"none"``.

    Raises:
        ValueError: another value (``"auto"`` included: resolve it first).
    """
    if amp not in AMP_DTYPES:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)}, got {amp!r}")
    return AMP_DTYPES[amp]


PRECISION_NAMES: dict[str, str] = {"none": "fp32", "bf16": "bf16", "fp16": "fp16"}
"""How logs and reports (and the benchmark's ``--precisions``) name each resolved setting."""


def precision_name(amp: str) -> str:
    """The name of a resolved ``amp`` setting in logs and reports: ``"fp32"``, ``"bf16"``
    or ``"fp16"``."""
    amp_dtype(amp)  # refuses an unknown setting
    return PRECISION_NAMES[amp]


def amp_setting(name: str) -> str:
    """The ``amp`` setting a precision name stands for (``"fp32"`` -> ``"none"``), the
    inverse of :func:`precision_name`.

    Raises:
        ValueError: not one of :data:`PRECISION_NAMES`' names.
    """
    for amp, known in PRECISION_NAMES.items():
        if known == name:
            return amp
    raise ValueError(
        f"unknown precision {name!r}; choose from {', '.join(PRECISION_NAMES.values())}"
    )


def autocast_context(device: torch.device, amp: str) -> contextlib.AbstractContextManager:
    """``torch.autocast`` for ``amp`` in {"bf16", "fp16"}; a no-op for "none"."""
    dtype = amp_dtype(amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def _cpuinfo_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


@functools.cache
def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX tiles)."""
    checks = [
        getattr(torch.cpu, name, None)
        for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    ]
    if all(callable(check) for check in checks):
        return any(check() for check in checks)
    return bool(_cpuinfo_flags() & {"avx512_bf16", "amx_bf16"})


def resolve_amp(setting: str, device: torch.device | str) -> tuple[str, str]:
    """``(amp, why)``: the precision ``setting`` means on ``device``, and the reason.

    ``"auto"`` picks as the module docstring says; an explicit setting is kept (bf16 on a
    CPU without native bf16 is kept too, with a warning saying what it costs).
    """
    device = torch.device(device)
    if setting not in AMP_SETTINGS:
        raise ValueError(f"amp must be one of {', '.join(AMP_DTYPES)} (or auto), got {setting!r}")
    if setting != "auto":
        if setting == "bf16" and device.type == "cpu" and not cpu_has_native_bf16():
            _warn_slow_bf16()
        return setting, "as configured"
    if device.type == "cuda":
        return "fp16", "auto: fp16 with loss scaling on a GPU"
    if device.type == "cpu":
        if cpu_has_native_bf16():
            return "bf16", "auto: this CPU has native bf16 (AVX512-BF16 or AMX)"
        return "none", (
            "auto: fp32, as this CPU has no native bf16 (no AVX512-BF16, no AMX), "
            "where bf16 runs 6-10 times slower"
        )
    return "none", f"auto: fp32 on {device.type}"


@functools.lru_cache(maxsize=1)
def _warn_slow_bf16() -> None:
    logger.warning(SLOW_BF16_WARNING)
