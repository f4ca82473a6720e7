# Subprocesses, threads and a process pool, the way tests and build scripts use them.
import concurrent.futures
import subprocess
import sys
import tempfile
import threading

out = subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True, text=True, check=True)
print(out.stdout.strip())
print(subprocess.check_output(["ls", "-la"], text=True).count("\n") > 0)

results = []
lock = threading.Lock()


def work(n):
    with lock:
        results.append(n * n)


threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(sorted(results))

with concurrent.futures.ThreadPoolExecutor(max_workers=4) as pool:
    print(list(pool.map(lambda x: x + 1, range(5))))

with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    f.write("hello")
print(open(f.name).read())
