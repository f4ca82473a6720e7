# Reading the process's own status and configuration: ordinary and harmless.
import os
import platform
import resource
import sys

with open("/proc/self/status") as f:
    for line in f:
        if line.startswith(("VmRSS", "Threads")):
            print(line.strip())
with open("/proc/meminfo") as f:
    print(f.readline().strip())
with open("/proc/self/statm") as f:
    print("statm", f.read().split()[:2])
print(open("/proc/loadavg").read().split()[0])
print(os.environ.get("HOME"), os.environ.get("PATH", "").split(":")[0])
print(os.getpid(), platform.python_version(), sys.maxsize > 2**32)
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
home = os.path.expanduser("~")
cache = os.path.join(home, ".cache", "app")
os.makedirs(cache, exist_ok=True)
print(os.listdir(os.getcwd()))
