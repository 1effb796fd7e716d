"""A classic BPF interpreter for seccomp programs, for tests only.

It runs a program on a ``struct seccomp_data`` of our choosing and returns the action, so
that two programs (ours and libseccomp's: sandboxd/isolation/seccomp.py) can be compared
decision for decision on every system call number and argument that matters, without a
kernel and without a process per case. Any instruction it does not know is an error, never
a guess: a comparison that silently skipped one would prove nothing.
"""

from __future__ import annotations

import struct

M32 = 0xFFFFFFFF

# BPF classes and fields (the kernel's uapi header for classic BPF)
_LD, _LDX, _ST, _STX, _ALU, _JMP, _RET, _MISC = range(8)
_W, _ABS, _MEM, _IMM = 0x00, 0x20, 0x60, 0x00
_K, _X, _A = 0x00, 0x08, 0x10


def seccomp_data(nr: int, arch: int, args: tuple[int, ...] = (), ip: int = 0) -> bytes:
    """``struct seccomp_data``: nr, arch (u32), instruction pointer, six u64 arguments."""
    full = tuple(args) + (0,) * (6 - len(args))
    return struct.pack("<IIQ6Q", nr & M32, arch & M32, ip, *full)


def run(program: bytes, data: bytes) -> int:
    """The value the program returns for ``data`` (SECCOMP_RET_*)."""
    if len(program) % 8 or not program:
        raise ValueError("not a whole program")
    ins = [struct.unpack_from("<HBBI", program, i) for i in range(0, len(program), 8)]
    a = x = 0
    mem = [0] * 16
    pc = 0
    steps = 0
    while True:
        if pc >= len(ins):
            raise ValueError("ran off the end of the program")
        steps += 1
        if steps > 100_000:
            raise ValueError("no end in sight")
        code, jt, jf, k = ins[pc]
        cls = code & 0x07
        pc += 1
        if cls in (_LD, _LDX):
            mode = code & 0xE0
            if code == _LD | _W | _ABS:
                if k % 4 or k + 4 > len(data):
                    raise ValueError(f"load at {k}")
                (value,) = struct.unpack_from("<I", data, k)
            elif mode in (_MEM, _IMM) and code & 0x18 == _W:
                value = mem[k] if mode == _MEM else k
            else:
                raise ValueError(f"unknown load {code:#x}")
            if cls == _LD:
                a = value
            else:
                x = value
        elif cls == _ST:
            mem[k] = a
        elif cls == _STX:
            mem[k] = x
        elif cls == _ALU:
            op, src = code & 0xF0, (x if code & _X else k)
            if op == 0x00:
                a = (a + src) & M32
            elif op == 0x10:
                a = (a - src) & M32
            elif op == 0x50:
                a &= src
            elif op == 0x40:
                a |= src
            elif op == 0xA0:
                a ^= src
            elif op == 0x60:
                a = (a << src) & M32
            elif op == 0x70:
                a >>= src
            elif op == 0x80:
                a = (-a) & M32
            else:
                raise ValueError(f"unknown ALU op {code:#x}")
        elif cls == _JMP:
            op, src = code & 0xF0, (x if code & _X else k)
            if op == 0x00:  # JA
                pc += k
                continue
            if op == 0x10:
                taken = a == src
            elif op == 0x20:
                taken = a > src
            elif op == 0x30:
                taken = a >= src
            elif op == 0x40:
                taken = bool(a & src)
            else:
                raise ValueError(f"unknown jump {code:#x}")
            pc += jt if taken else jf
        elif cls == _RET:
            src = code & 0x18
            if src == _K:
                return k
            if src == _A:
                return a
            raise ValueError(f"unknown return {code:#x}")
        elif cls == _MISC:
            if code == _MISC | 0x00:  # TAX
                x = a
            elif code == _MISC | 0x80:  # TXA
                a = x
            else:
                raise ValueError(f"unknown misc {code:#x}")
