"""A session from Python, as an agent uses one: data in, state across cells, a failing cell that
does not lose anything, a shell command, output streamed as it comes, a chart back as PNG.

    python bindings-python/examples/session.py      (as root, like the native backend)
"""

import asyncio

from vana_sandbox import AsyncSandbox, Sandbox

with Sandbox(memory_mb=512) as sb, sb.session(timeout=30) as s:
    s.files.write("sales.csv", "month,units\njan,3\nfeb,5\nmar,8\n")
    s.run_code("import csv\nrows = list(csv.DictReader(open('sales.csv')))")
    r = s.run_code("rows[0]['units'] / 0")  # fails; the session keeps going
    print("error:", r.error.name, "-", r.error.value)
    r = s.run_code("total = sum(int(r['units']) for r in rows)\ntotal")
    print("total:", r.text)  # 16
    print("ls:", s.commands.run("ls *.csv").stdout.strip())
    s.run_code(
        "import time\nfor r in rows:\n    print(r['month'], flush=True)\n    time.sleep(0.2)",
        on_stdout=lambda chunk: print("  streamed:", chunk.strip()),
    )
    r = s.run_code(
        "import matplotlib.pyplot as plt\n"
        "plt.bar([r['month'] for r in rows], [int(r['units']) for r in rows])\n"
        "plt.title('units sold')"
    )
    chart = next(d for d in r.results if d.is_figure)
    with open("/tmp/vana-units.png", "wb") as f:
        f.write(chart.png_bytes)
    print("chart: /tmp/vana-units.png,", len(chart.png_bytes), "bytes of PNG")


async def main() -> None:
    async with AsyncSandbox() as sb:
        async for chunk in sb.stream("for i in range(3): print(i, flush=True)"):
            print("async chunk:", chunk.stream, repr(chunk.data))
        async with sb.session() as s:
            await s.run_code("x = 41")
            print("async session:", (await s.run_code("x + 1")).text)


asyncio.run(main())
