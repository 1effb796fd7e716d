# Wrong: prints the first number.
import sys

data = sys.stdin.buffer.read().split()
print(int(data[1]))
