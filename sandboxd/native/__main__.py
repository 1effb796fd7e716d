import sys

from sandboxd.native import NativeBuildError, init_path

try:
    print(init_path())
except NativeBuildError as e:
    sys.stderr.write(f"sandboxd: {e}\n")
    sys.exit(1)
