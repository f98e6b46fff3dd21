"""Training-step time of the quickstart DeepJSCC with 1 torch thread vs all cores.

Why: ``semedge train/quickstart`` drop to 1 thread when the CPU is already busy
(:func:`sdk.train.default_threads`). This measures both settings side by side in one
run, each in a fresh subprocess (torch's thread pool cannot shrink reliably in place):

    python tools/bench_train_threads.py [--steps 20] [--batch 64] [--hidden 32]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = """
import json, sys, time, torch
threads, steps, batch, hidden = map(int, sys.argv[1:5])
torch.set_num_threads(threads)
from sdk.models import DeepJSCC
torch.manual_seed(0)
model = DeepJSCC(hidden=hidden)
opt = torch.optim.Adam(model.parameters(), 1e-3)
x = torch.rand(batch, 3, 32, 32)
def step():
    loss = ((model(x, 10.0)["recon"] - x) ** 2).mean()
    opt.zero_grad(); loss.backward(); opt.step()
step()
t = time.perf_counter()
for _ in range(steps):
    step()
print(json.dumps({"threads": threads, "ms_per_step": 1000 * (time.perf_counter() - t) / steps}))
"""


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--hidden", type=int, default=32)
    args = p.parse_args()
    cores = os.cpu_count() or 1
    load = os.getloadavg()[0]
    results = []
    for threads in sorted({1, cores}):
        cmd = [sys.executable, "-c", CHILD, str(threads), str(args.steps)]
        cmd += [str(args.batch), str(args.hidden)]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        results.append(json.loads(out.strip().splitlines()[-1]))
    print(f"cores {cores}, 1-min load average at start {load:.2f}")
    for r in results:
        print(f"{r['threads']} thread(s): {r['ms_per_step']:.0f} ms per step (batch {args.batch})")
    if len(results) == 2:
        print(
            f"{cores} threads / 1 thread time ratio: "
            f"{results[1]['ms_per_step'] / results[0]['ms_per_step']:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
