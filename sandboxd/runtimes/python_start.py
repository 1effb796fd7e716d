"""sandboxd's warm start for Python: the text the interpreter starts with (``-c``).

The bootstrap itself (python_boot.py beside this file: what it does, and why) follows the
warm request on descriptor 3, compiled once by the supervisor (runtimes/__init__.py): read
here and run, so that no container compiles it again (that compile was ~2 ms of CPU per
warm container here, and its parser's memory stayed in the waiting interpreter, ~0.5 MiB).
The code is the supervisor's Python's: an interpreter of another version (an image's), or
one started with -O, compiles the source that comes with it instead.
"""


def _sandboxd_load():
    import marshal
    import os
    import sys

    def take(n):
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        while got < n:
            k = os.readv(3, [view[got:]])
            if not k:  # the container went before its interpreter was up
                os._exit(126)
            got += k
        return view

    blob = take(int.from_bytes(take(4), "little"))
    size = int.from_bytes(blob[4:8], "little")
    if (blob[:4] == sys.modules["_frozen_importlib_external"].MAGIC_NUMBER
            and not sys.flags.optimize):
        return marshal.loads(blob[8:8 + size])
    return compile(bytes(blob[8 + size:]), "<string>", "exec", dont_inherit=True)


exec(_sandboxd_load())
_sandboxd_main, _sandboxd_keep, _sandboxd_finish = _sandboxd_warm()  # noqa: F821 (its code's)
try:
    exec(*_sandboxd_main())
except BaseException as _sandboxd_e:
    _sandboxd_keep(_sandboxd_e)
_sandboxd_finish()  # outside the handler, as CPython prints it (no context)
