# Wrong: pi as 3.14 is off by more than the tolerance.
r = float(input())
print(f"{3.14 * r * r:.9f}")
