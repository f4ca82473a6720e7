# Ordinary data processing: CSV, JSON, statistics, regular expressions, dates.
import csv
import io
import json
import re
import statistics
from collections import Counter, defaultdict
from datetime import datetime, timedelta

RAW = """name,dept,salary,joined
alice,eng,120000,2019-04-01
bob,eng,95000,2021-09-15
carol,sales,70000,2018-01-20
dave,sales,72000,2022-03-03
"""

rows = list(csv.DictReader(io.StringIO(RAW)))
by_dept = defaultdict(list)
for r in rows:
    by_dept[r["dept"]].append(int(r["salary"]))

summary = {d: {"mean": statistics.mean(v), "median": statistics.median(v)} for d, v in by_dept.items()}
print(json.dumps(summary, indent=2, sort_keys=True))

words = Counter(re.findall(r"[a-z]+", "the shadow of the memory environ ssh key value".lower()))
print(words.most_common(3))

joined = [datetime.strptime(r["joined"], "%Y-%m-%d") for r in rows]
print(max(joined) - min(joined) > timedelta(days=365))
shadow_price = 3.5  # a variable that only looks like a sensitive word
print(f"shadow price: {shadow_price}")
