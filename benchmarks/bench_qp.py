"""The native QP against qpth and cvxpylayers, one process, one thread.

    python benchmarks/bench_qp.py [--quick]

Random feasible safety-filter-sized problems (n = 7 variables, m = 18
constraint rows, input bounds), batch 1 and 1024, float64 and float32:
forward, and forward + backward of a sum of the solution. Writes
``benchmarks/results/qp.json`` and prints a markdown table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _util import timeit, write

from safeliquid.qp import solve_qp


def problems(batch: int, n: int, m: int, dtype: torch.dtype, seed: int = 0) -> list[torch.Tensor]:
    """A batch of QPs that are feasible (u = 0 satisfies every row) with some rows active."""
    g = torch.Generator().manual_seed(seed)
    A = torch.randn(batch, n, n, generator=g, dtype=torch.float64)
    Q = A @ A.transpose(1, 2) / n + torch.eye(n, dtype=torch.float64)
    q = torch.randn(batch, n, generator=g, dtype=torch.float64) * 3
    G = torch.randn(batch, m, n, generator=g, dtype=torch.float64)
    h = torch.rand(batch, m, generator=g, dtype=torch.float64)
    lb, ub = -2 * torch.ones(batch, n, dtype=torch.float64), 2 * torch.ones(batch, n, dtype=torch.float64)
    return [t.to(dtype) for t in (Q, q, G, h, lb, ub)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = []
    for batch in (1, 1024):
        for dtype in (torch.float64, torch.float32):
            for backend in ("native", "qpth", "cvxpy"):
                if backend == "cvxpy" and batch > 1 and args.quick:
                    continue
                data = problems(batch, 7, 18, dtype)
                repeats = 3 if (args.quick or (batch > 1 and backend != "native")) else (200 if batch == 1 else 20)
                if backend == "cvxpy":
                    repeats = max(1, repeats // 10)

                def fwd(data=data, backend=backend) -> None:
                    with torch.no_grad():
                        solve_qp(*data[:4], data[4], data[5], backend=backend)

                def fwd_bwd(data=data, backend=backend) -> None:
                    leaves = [t.clone().requires_grad_() for t in data]
                    solve_qp(*leaves[:4], leaves[4], leaves[5], backend=backend).u.sum().backward()

                row = {
                    "batch": batch,
                    "dtype": str(dtype).replace("torch.", ""),
                    "backend": backend,
                    "forward": timeit(fwd, repeats, warmup=2),
                    "forward_backward": timeit(fwd_bwd, repeats, warmup=2),
                }
                results.append(row)
                print(
                    f"B={batch:5d} {row['dtype']:8s} {backend:7s} fwd {row['forward']['median_us'] / 1e3:9.3f} ms "
                    f"fwd+bwd {row['forward_backward']['median_us'] / 1e3:9.3f} ms",
                    flush=True,
                )
    path = write("qp", {"n": 7, "m": 18, "quick": args.quick, "results": results})
    print("\n| batch | dtype | backend | forward (ms) | forward+backward (ms) | native speed-up (fwd+bwd) |")
    print("|---|---|---|---|---|---|")
    for r in results:
        native = next(
            x for x in results if x["batch"] == r["batch"] and x["dtype"] == r["dtype"] and x["backend"] == "native"
        )
        ratio = r["forward_backward"]["median_us"] / native["forward_backward"]["median_us"]
        print(
            f"| {r['batch']} | {r['dtype']} | {r['backend']} | {r['forward']['median_us'] / 1e3:.3f} | "
            f"{r['forward_backward']['median_us'] / 1e3:.3f} | {ratio:.1f}x |"
        )
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
