"""Throughput through the Python binding, side by side with bare Python on the same cores.

    python bindings-python/benches/throughput.py [RUNS] [CONCURRENCY]     (as root; 1000 8)

Runs RUNS trivial programs (`print(1)`) at CONCURRENCY at once three ways, interleaved in
rounds so that the host's drift hits each alike: through `AsyncSandbox` (one engine, runs
awaited together), through the blocking `Sandbox` from a pool of CONCURRENCY threads, and as
bare `python3 -c 'print(1)'` processes, CONCURRENCY at a time. Prints runs per second and each
binding's share of bare Python's rate (the speed issue's throughput target is 80 %).
"""

import asyncio
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor

from vana_sandbox import AsyncSandbox, Sandbox

PYTHON = "/usr/bin/python3"
ROUNDS = 3


async def bare(n: int, concurrency: int) -> None:
    gate = asyncio.Semaphore(concurrency)

    async def one() -> None:
        async with gate:
            p = await asyncio.create_subprocess_exec(
                PYTHON, "-c", "print(1)", stdout=asyncio.subprocess.DEVNULL
            )
            if await p.wait() != 0:
                raise RuntimeError("bare python3 failed")

    await asyncio.gather(*(one() for _ in range(n)))


async def through_async(sb: AsyncSandbox, n: int) -> None:
    results = await asyncio.gather(*(sb.run_code("print(1)") for _ in range(n)))
    failed = [r for r in results if not r.ok]
    if failed:
        raise RuntimeError("a run failed: %r" % failed[0])


def through_threads(sb: Sandbox, pool: ThreadPoolExecutor, n: int) -> None:
    for r in pool.map(lambda _: sb.run_code("print(1)"), range(n)):
        if not r.ok:
            raise RuntimeError("a run failed: %r" % r)


def timed(f) -> float:
    t = time.perf_counter()
    f()
    return time.perf_counter() - t


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    concurrency = int(sys.argv[2]) if len(sys.argv) > 2 else 8
    per_round = max(1, n // ROUNDS)
    rates = {"AsyncSandbox": [], "Sandbox + threads": [], "bare python3": []}
    loop = asyncio.new_event_loop()
    asb = AsyncSandbox(max_concurrency=concurrency)
    sb = Sandbox(max_concurrency=concurrency)
    with ThreadPoolExecutor(concurrency) as pool:
        # Warm-up: the engines' first sandboxes, the interpreter's caches.
        loop.run_until_complete(through_async(asb, concurrency))
        through_threads(sb, pool, concurrency)
        for _ in range(ROUNDS):
            for name, run in (
                ("AsyncSandbox", lambda: loop.run_until_complete(through_async(asb, per_round))),
                ("Sandbox + threads", lambda: through_threads(sb, pool, per_round)),
                ("bare python3", lambda: loop.run_until_complete(bare(per_round, concurrency))),
            ):
                rates[name].append(per_round / timed(run))
    loop.run_until_complete(asb.close())
    sb.close()
    loop.close()
    base = statistics.median(rates["bare python3"])
    print(
        "%d runs of python print(1) at concurrency %d, %d interleaved rounds (median runs/s):"
        % (per_round * ROUNDS, concurrency, ROUNDS)
    )
    for name, r in rates.items():
        rate = statistics.median(r)
        print("  %-18s %7.1f runs/s  %4.0f %% of bare" % (name, rate, 100 * rate / base))


if __name__ == "__main__":
    main()
