"""Where Sionna RT runs: Mitsuba's CUDA variant on a GPU or its LLVM variant on the CPU.

The choice is made once per process, before Sionna RT is imported, from the environment
variable ``HPCOPT_SIONNA_DEVICE``: ``auto`` (the default), ``cuda`` or ``cpu``. It is the
node's, not the campaign's (a campaign may resume on another partition), hence not a
config key. ``auto`` takes the GPU when Dr.Jit's CUDA backend starts and the CPU when this
process was given no GPU; a GPU that is there but does not start is an error, never a
quiet move to the CPU that a campaign would only notice by its pace.
"""

from __future__ import annotations

import ctypes
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ENV = "HPCOPT_SIONNA_DEVICE"
CHOICES = ("auto", "cuda", "cpu")
CUDA = "cuda_ad_mono_polarized"
LLVM = "llvm_ad_mono_polarized"
_NO_DEVICES = ("", "-1", "NoDevFiles")  # what Slurm and Ray write to hide every GPU


class DeviceError(RuntimeError):
    """Sionna RT cannot run where ``HPCOPT_SIONNA_DEVICE`` asks it to."""


@dataclass(frozen=True)
class Device:
    """The Mitsuba variant chosen, and why (one sentence, for logs and errors)."""

    variant: str
    why: str

    @property
    def gpu(self) -> bool:
        return self.variant.startswith("cuda")


def wanted() -> str:
    """``HPCOPT_SIONNA_DEVICE``, checked (``auto`` when unset)."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise DeviceError(f"{ENV}={os.environ[ENV]!r}: must be one of {', '.join(CHOICES)}")
    return value


def no_gpu_given() -> str:
    """Why this process has no GPU to use ('' when one seems to be there)."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and visible.strip() in _NO_DEVICES:
        return f"this process was given no GPU (CUDA_VISIBLE_DEVICES={visible!r})"
    if not os.path.exists("/dev/nvidiactl"):
        return "this node shows no NVIDIA GPU (no /dev/nvidiactl)"
    return ""


def cuda_driver_error() -> str:
    """What the CUDA driver itself says when asked to start, for an error message."""
    try:
        lib = ctypes.CDLL(os.environ.get("DRJIT_LIBCUDA_PATH", "libcuda.so.1"))
    except OSError as exc:
        return f"the CUDA driver library does not load ({exc})"
    code = lib.cuInit(0)
    if code != 0:
        name = ctypes.c_char_p()
        lib.cuGetErrorName(code, ctypes.byref(name))
        return f"cuInit() returned {(name.value or b'?').decode()} ({code})"
    count = ctypes.c_int(0)
    lib.cuDeviceGetCount(ctypes.byref(count))
    if count.value == 0:
        return "the CUDA driver starts but sees no device"
    return (
        f"the CUDA driver starts and sees {count.value} device(s), but Dr.Jit's CUDA "
        "backend did not (a driver older than Dr.Jit needs?)"
    )


def choose(
    asked: str,
    variants: Sequence[str],
    cuda_started: Callable[[], bool],
    absent: Callable[[], str] = no_gpu_given,
    driver_error: Callable[[], str] = cuda_driver_error,
) -> Device:
    """The variant for ``asked`` (one of :data:`CHOICES`) among Mitsuba's ``variants``;
    ``cuda_started()`` says whether Dr.Jit's CUDA backend started. Raises
    :class:`DeviceError`, naming the reason, where CUDA is asked for or a GPU is there and
    it does not start."""
    if asked == "cpu":
        return Device(LLVM, f"{ENV}=cpu")
    if CUDA not in variants:
        reason = f"this Mitsuba build has no {CUDA} variant"
        gone = absent()
    elif cuda_started():
        return Device(CUDA, "Dr.Jit's CUDA backend started")
    else:
        gone = absent()
        reason = gone or f"a GPU is there but Dr.Jit's CUDA backend did not start: {driver_error()}"
    if asked == "auto" and gone:
        return Device(LLVM, f"{ENV}=auto and {gone}")
    raise DeviceError(
        f"Sionna RT cannot run on the GPU ({ENV}={asked}): {reason}. Set {ENV}=cpu to run "
        "it on the CPU on purpose"
    )
