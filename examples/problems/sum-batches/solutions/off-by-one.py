# Wrong on every test but the first: fails the small batch, so the large one is skipped.
a, b = map(int, input().split())
print(a + b + (1 if a + b > 3 else 0))
