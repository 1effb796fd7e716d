# Guesses without asking: wrong unless the secret is 1.
n = int(input())
print("! 1", flush=True)
