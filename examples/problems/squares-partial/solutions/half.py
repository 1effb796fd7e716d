# Right for the first half of the squares only: partial points.
n = int(input())
print("\n".join(str(i * i if i <= n // 2 else i) for i in range(1, n + 1)))
