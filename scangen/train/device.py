"""Device choice (CUDA > MPS > CPU) and mixed precision, which is only ever enabled on CUDA."""

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


def amp_dtype(device: torch.device, enabled: bool) -> torch.dtype | None:
    """Autocast dtype: bf16 on CUDA when supported, else fp16; None (full precision) off CUDA."""
    if not enabled or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, dtype: torch.dtype | None) -> ContextManager:
    """`torch.autocast` on CUDA with `dtype`, a no-op context otherwise."""
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
