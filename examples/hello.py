# The sample job of scripts/demo.sh: prints where it runs and what it may do.
import os
import socket

print("hello from sandboxd")
print(f"uid={os.getuid()} hostname={socket.gethostname()} cwd={os.getcwd()}")
print("interfaces:", sorted(name for _, name in socket.if_nameindex()))
try:
    open("/etc/passwd", "a")
except OSError as e:
    print("writing /etc/passwd:", e.strerror)
