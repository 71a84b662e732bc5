# ratio.py HYPERFINE_JSON OURS THEIRS: the ratio of two commands' medians
# in a hyperfine export, with both medians in milliseconds.
#
# HYPERFINE_JSON may be a glob ("run-*.json", quoted): the rounds of one
# comparison (scripts/bench). Then every run of every round is pooled
# into one median per command, and the spread of the rounds' own ratios
# is printed beside it, so that one round's drift shows instead of hiding.
import glob
import json
import statistics
import sys

pattern, ours, theirs = sys.argv[1:4]
files = sorted(glob.glob(pattern)) or [pattern]
pooled = {ours: [], theirs: []}
per_round = []
for name in files:
    results = {r["command"]: r for r in json.load(open(name))["results"]}
    for command in (ours, theirs):
        pooled[command] += results[command]["times"]
    per_round.append(results[ours]["median"] / results[theirs]["median"])
a, b = statistics.median(pooled[ours]), statistics.median(pooled[theirs])
spread = ""
if len(files) > 1:
    spread = (f"; {len(files)} rounds, {len(pooled[ours])} runs each,"
              f" rounds {min(per_round):.2f}-{max(per_round):.2f}")
print(f"median {ours} / {theirs}: {a / b:.2f}"
      f" ({a*1000:.1f} ms vs {b*1000:.1f} ms{spread})")
