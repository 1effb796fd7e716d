"""Size caps that the protocol enforces on every message, before any job runs.

Strategy: these are *sanity* caps that protect the process reading the bytes
(memory, CPU spent validating), not the sandbox limits of a job. A daemon
applies its profiles' tighter limits later. The caps are one frozen record so
that a server can announce them in its ``Welcome`` and a client can check its
own messages against them before sending, failing locally with a clear
message instead of getting a remote error back.

This module knows nothing of frames or events.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["DEFAULT_SIZE_LIMITS", "MAX_FRAME_SIZE_CEILING", "SizeLimits"]

MiB = 1024 * 1024

MAX_FRAME_SIZE_CEILING = 2**32 - 1
"""The largest length a 4-byte frame prefix can carry."""


@dataclass(frozen=True, slots=True, kw_only=True)
class SizeLimits:
    """Protocol-level caps; every field is announced in ``Welcome.limits``.

    Byte counts of strings are counted in UTF-8.
    """

    max_frame_size: int = 64 * MiB
    """Largest frame body in bytes; a receiver refuses a larger prefix at once."""
    max_files: int = 1000
    """Files in one submission."""
    max_file_size: int = 16 * MiB
    """Bytes in one file."""
    max_total_file_size: int = 48 * MiB
    """Bytes in all files of one submission together."""
    max_path_length: int = 255
    """Bytes in one file path."""
    max_input: int = 16 * MiB
    """Bytes in one stdin or one expected output."""
    max_tests: int = 1000
    """Tests (run steps) in one submission."""
    max_argv: int = 1024
    """Items in one argv."""
    max_arg_length: int = 128 * 1024
    """Bytes in one argv item or one environment value (Linux's MAX_ARG_STRLEN)."""
    max_env: int = 256
    """Variables in one environment."""
    max_chunk: int = 1 * MiB
    """Bytes of data in one stdin or output chunk."""
    max_jobs_in_flight: int = 1024
    """Jobs submitted on one connection and not yet answered."""
    max_pending_requests: int = 64
    """Pings, job-list and stats requests sent and not yet answered."""

    def __post_init__(self) -> None:
        # A bad configuration is a programming error: fail where it is made.
        for name in self.__slots__:
            value = getattr(self, name)
            if type(value) is not int or value < 1:
                raise ValueError(f"SizeLimits.{name} must be an int >= 1, got {value!r}")
        if self.max_frame_size > MAX_FRAME_SIZE_CEILING:
            raise ValueError(
                f"SizeLimits.max_frame_size must be <= {MAX_FRAME_SIZE_CEILING}, "
                f"got {self.max_frame_size}"
            )

    def narrowed(self, other: SizeLimits) -> SizeLimits:
        """The smaller of each cap: what a client may send once the server spoke."""
        return SizeLimits(
            **{name: min(getattr(self, name), getattr(other, name)) for name in self.__slots__}
        )


DEFAULT_SIZE_LIMITS = SizeLimits()
