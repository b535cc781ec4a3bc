"""Memory: resident set size of a loaded router vs the encoder alone, each in a fresh Python process. Goal: ≤ +50 MB.

Process A loads the packaged all-MiniLM-L6-v2 and embeds one prompt. Process B loads a saved router (10 real LLMs,
K=20, 500 MMLU-Pro probes — the encoder included) and routes one prompt. The difference is what the router adds on top
of the encoder it needs anyway. Current RSS (VmRSS) and peak RSS (ru_maxrss) are both reported.

    python benchmarks/memory.py [--data DIR]
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import add_pool, build, data_folder, machine, parse_args

PROMPT = "Which of the following is a prime number? (A) 21 (B) 23 (C) 25 (D) 27"

MEASURE = """
import json, resource
def rss_mb():
    for line in open('/proc/self/status'):
        if line.startswith('VmRSS:'):
            return int(line.split()[1]) / 1024
out = {'start': rss_mb()}
"""

ENCODER_ONLY = MEASURE + f"""
from uniroute_core.embedding import default_embedder
e = default_embedder()
e.embed([{PROMPT!r}], show_progress=False)
out['rss'] = rss_mb(); out['peak'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps(out))
"""

ROUTER = MEASURE + f"""
import sys
from uniroute_core import UniRouter
r = UniRouter.load(sys.argv[1], show_progress=False)
d = r.route_one({PROMPT!r})
out['rss'] = rss_mb(); out['peak'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out['model'] = d.model
print(json.dumps(out))
"""


def run(code: str, *argv: str) -> dict:
    res = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    args = parse_args(__doc__.splitlines()[0], [("--repeats", {"type": int, "default": 2})])
    print(machine())
    setup = build(data_folder(args.data), seed=args.seed)
    add_pool(setup)
    with tempfile.TemporaryDirectory() as tmp:
        path = setup.router.save(Path(tmp) / "router")
        size_kb = sum(f.stat().st_size for f in path.iterdir()) / 1024
        enc, rou = [], []
        for _ in range(args.repeats):  # alternate, fresh process each time
            enc.append(run(ENCODER_ONLY))
            rou.append(run(ROUTER, str(path)))
    e = min(enc, key=lambda x: x["rss"])
    r = min(rou, key=lambda x: x["rss"])
    print(f"\nsaved router on disk: {size_kb:.0f} KB ({len(setup.router.models)} members, K=20, "
          f"{len(setup.router.probes)} probes)")
    print(f"{'process':<34}{'RSS':>10}{'peak RSS':>12}")
    print(f"{'A: encoder alone + embed 1 prompt':<34}{e['rss']:>7.1f} MB{e['peak']:>9.1f} MB")
    print(
        f"{'B: UniRouter.load + route 1 prompt':<34}{r['rss']:>7.1f} MB{r['peak']:>9.1f} MB   (routed to {r['model']})"
    )
    print(f"router adds: {r['rss'] - e['rss']:+.1f} MB RSS, {r['peak'] - e['peak']:+.1f} MB peak   (goal ≤ +50 MB)"
          f"   [min over {args.repeats} fresh processes each]")


if __name__ == "__main__":
    main()
