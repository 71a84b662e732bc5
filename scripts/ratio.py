# ratio.py HYPERFINE_JSON OURS THEIRS: the ratio of two commands' medians
# in one hyperfine export, with both medians in milliseconds.
import json
import sys

results = {r["command"]: r["median"] for r in json.load(open(sys.argv[1]))["results"]}
ours, theirs = results[sys.argv[2]], results[sys.argv[3]]
print(f"median {sys.argv[2]} / {sys.argv[3]}: {ours / theirs:.2f}"
      f" ({ours*1000:.1f} ms vs {theirs*1000:.1f} ms)")
