"""Check that a saved network file carries its tuning: compile the symmetric benchmark net at
64x128x128 with the tuning cache in one empty folder and save it; then, in a fresh process whose
ZNNX_CACHE_DIR is another empty folder, load it and run it. Prints whether anything was timed, the
algorithms, whether the outputs are identical and the load-to-first-output time.

    python scripts/check_plan_reuse.py [--patch 64,128,128] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

LOAD = """
import json, sys, time
start = time.perf_counter()
import numpy as np, torch, znnx
torch.set_num_threads(int(sys.argv[3]))
net = znnx.load_net(sys.argv[1])
y = net(np.load(sys.argv[2]))
seconds = time.perf_counter() - start
np.save(sys.argv[2] + ".loaded.npy", y)
print(json.dumps({"seconds": seconds, "algorithms": [[c.node, c.algorithm.name, c.source] for c in net.algorithms]}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--patch", default="64,128,128")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    patch = tuple(int(p) for p in args.patch.split(","))
    with tempfile.TemporaryDirectory() as work:
        first, second = Path(work) / "first-cache", Path(work) / "second-cache"
        os.environ["ZNNX_CACHE_DIR"] = str(first)
        import numpy as np
        import torch

        import znnx
        from znnx.bench.models import NETS, load_graph

        torch.set_num_threads(args.threads)
        x = np.random.default_rng(0).standard_normal((1, 1, *patch)).astype(np.float32)
        start = time.perf_counter()
        net = znnx.compile(load_graph(NETS["symmetric"].build(False, patch), x), patch)
        tuned = time.perf_counter() - start
        path = net.save(Path(work) / "symmetric.znnx")
        np.save(Path(work) / "x.npy", x[0])
        expected = net(x[0])
        env = {**os.environ, "ZNNX_CACHE_DIR": str(second)}
        done = subprocess.run([sys.executable, "-c", LOAD, str(path), str(Path(work) / "x.npy"), str(args.threads)],
                              capture_output=True, text=True, env=env, check=True)
        loaded = json.loads(done.stdout.splitlines()[-1])
        same = np.array_equal(np.load(Path(work) / "x.npy.loaded.npy"), expected)
        saved = [[c.node, c.algorithm.name] for c in net.algorithms]
        report = {
            "patch": patch, "threads": args.threads, "compile_and_tune_seconds": round(tuned, 1),
            "convs": len(saved), "measured_at_compile": sum(c.source == "measured" for c in net.algorithms),
            "load_to_first_output_seconds": round(loaded["seconds"], 2),
            "same_algorithms": [a[:2] for a in loaded["algorithms"]] == saved,
            "sources_after_load": sorted({a[2] for a in loaded["algorithms"]}),
            "tuning_results_in_second_cache": (second / "autotune.json").exists(),
            "output_identical": bool(same),
        }
    print(json.dumps(report, indent=1))
    ok = report["same_algorithms"] and not report["tuning_results_in_second_cache"] and same \
        and loaded["seconds"] < 5
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
