# Numerical work as an agent writes it: numpy-style arrays by hand, a simulation, a matrix.
import math
import random

random.seed(42)
samples = [random.gauss(0, 1) for _ in range(10_000)]
mean = sum(samples) / len(samples)
var = sum((x - mean) ** 2 for x in samples) / (len(samples) - 1)
print(f"mean={mean:.3f} sd={math.sqrt(var):.3f}")


def matmul(a, b):
    return [[sum(x * y for x, y in zip(row, col)) for col in zip(*b)] for row in a]


m = [[1, 2], [3, 4]]
print(matmul(m, m))

# Monte Carlo estimate of pi
inside = sum(1 for _ in range(100_000) if random.random() ** 2 + random.random() ** 2 <= 1)
print(4 * inside / 100_000)
