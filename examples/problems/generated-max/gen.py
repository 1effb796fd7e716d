# Generator: python3 gen.py N SEED prints "N" and N numbers, and writes their maximum
# to the file "answer" (the test's expected output).
import random
import sys

n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
xs = [rng.randint(-10**9, 10**9) for _ in range(n)]
print(n)
print(" ".join(map(str, xs)))
with open("answer", "w") as f:
    f.write(f"{max(xs)}\n")
