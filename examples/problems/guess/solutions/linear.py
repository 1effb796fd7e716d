# Asks 1, 2, 3, ...: right on small tests, partial or wrong answer on larger ones.
n = int(input())
for y in range(1, n + 1):
    print("?", y, flush=True)
    if input().strip() == "=":
        print("!", y, flush=True)
        break
