"""Device choice (CUDA > MPS > CPU) and mixed precision of training (CUDA; CPU bfloat16 on request)."""

from __future__ import annotations

import contextlib
import os
from typing import ContextManager

import torch


def resolve_device(name: str = "auto") -> torch.device:
    """`"auto"` picks CUDA, then Apple MPS, then CPU; any other string is a torch device name.

    Raises ValueError when an explicitly requested CUDA/MPS device is not available.
    """
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ValueError(f"device: expected 'auto' or a torch device name, got {name!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device: {name!r} requested but CUDA is not available")
    if device.type == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError(f"device: {name!r} requested but MPS is not available")
    return device


def amp_dtype(device: torch.device, enabled: bool, cpu: bool = False) -> torch.dtype | None:
    """Autocast dtype of training: on CUDA (`enabled`) bf16 when supported, else fp16; on CPU bf16
    when `cpu` (TrainConfig.amp_cpu); None (full precision) otherwise, and always on MPS."""
    if device.type == "cuda" and enabled:
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu:
        return torch.bfloat16
    return None


def cpu_has_native_bf16() -> bool:
    """True when this CPU multiplies bfloat16 matrices natively (AVX512-BF16 or AMX tiles), where
    oneDNN's bf16 GEMM runs several times the float32 rate; elsewhere bf16 is emulated and slower."""
    cpu = getattr(torch, "cpu", None)
    probes = [getattr(cpu, name, None) for name in ("_is_avx512_bf16_supported", "_is_amx_tile_supported")]
    return any(bool(p()) for p in probes if callable(p))


def resolve_amp_cpu(value: bool | str) -> bool:
    """TrainConfig.amp_cpu from a parameter value: True / False as given, "auto" -> `cpu_has_native_bf16()`.

    Resolved where the configs are made (not where they run), so a run's config says which precision
    it trained in and the run cache keeps bf16 and float32 runs apart."""
    if isinstance(value, bool):
        return value
    if value == "auto":
        return cpu_has_native_bf16()
    raise ValueError(f"amp_cpu: expected true, false or \"auto\", got {value!r}")


def precision_text(device_type: str, amp: bool, amp_cpu: bool) -> str:
    """How a run on `device_type` computes, in words (for protocol tables): training precision, then
    that evaluation is float32."""
    if device_type == "cuda" and amp:
        train = "mixed precision (bfloat16 or float16 autocast, float32 weights)"
    elif device_type == "cpu" and amp_cpu:
        train = "mixed precision (bfloat16 autocast, float32 weights)"
    else:
        train = "float32"
    return f"training in {train}; evaluation and predictions in float32"


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """`torch.autocast` on `device` with `dtype`, a no-op context when dtype is None."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def make_grad_scaler(device: torch.device, dtype: torch.dtype | None) -> "torch.amp.GradScaler":
    """Loss scaler, active only for fp16 on CUDA (bf16 and fp32 need none)."""
    return torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)


@contextlib.contextmanager
def deterministic_mode(enabled: bool = True):
    """Temporarily request deterministic kernels (warn-only where an op has none); restore after.

    Also sets CUBLAS_WORKSPACE_CONFIG (needed for deterministic cuBLAS) unless already set; it
    only takes effect if CUDA has not been initialised yet in this process.
    """
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(enabled, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)


@contextlib.contextmanager
def cpu_threads(n: int | None):
    """Temporarily set torch's intra-op CPU thread count (None: unchanged); restore after."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
