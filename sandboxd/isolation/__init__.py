"""The kernel mechanisms that isolate a job, one module each, and the plan they compile to.

``mounts`` (the container's filesystem), ``landlock``, ``seccomp``,
``rlimits`` and ``identity`` (uids and the user namespace maps) each decide
what their mechanism must do for a container shape; ``initplan`` packs those
decisions into the byte string the native init (sandboxd/native/) carries
out; ``_libc`` and ``_syscalls_lsm`` wrap the raw system calls. The order in
which the layers apply, and why, is docs/isolation.md.

The rule: this package knows nothing of trio, sockets or jobs. It is plain
data and system calls, so the zygote (which runs no event loop) imports it,
and each mechanism can be tested on its own (tests/unit/isolation/).
tests/unit/test_layering.py holds it to no module-level trio import.
"""
