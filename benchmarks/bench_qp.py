"""The native QP against qpth and cvxpylayers, and its batch-1 path against DAQP; one process, one thread.

    python benchmarks/bench_qp.py [--quick]

Random feasible safety-filter-sized problems (n = 7 variables, m = 18
constraint rows, input bounds), batch 1 and 1024, float64 and float32:
forward, and forward + backward of a sum of the solution. At batch 1 (float64)
also the floor: DAQP (a C dual active-set solver, ``pip install daqp``) through
its Python call, against :func:`safeliquid.qp.solve_qp_numpy` (what the safety
layer's control-loop path calls) and :func:`safeliquid.qp.solve_qp`'s forward
(torch, differentiable), on the same problems. Writes
``benchmarks/results/qp.json`` and prints markdown tables.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import numpy as np
from _util import timeit, write

from safeliquid.qp import solve_qp, solve_qp_numpy


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


def batch_one_floor(count: int) -> dict | None:
    """Median time per batch-1 solve over ``count`` problems for DAQP, ``solve_qp_numpy`` and ``solve_qp``,
    the three solving each problem in turn (same problems, same moment), and the largest difference in
    ``u`` from DAQP's. ``None`` without daqp installed."""
    try:
        import daqp
    except ImportError:
        print("daqp not installed: the batch-1 floor is skipped (pip install daqp)")
        return None
    probs = [[t.numpy() for t in problems(1, 7, 18, torch.float64, seed=s)] for s in range(count)]
    low = np.full(18, -1e30)
    # DAQP's own layout, built before the clock: the bounds first, then the rows (its fastest call).
    daqp_args = [
        (Q[0], q[0], G[0], np.concatenate([ub[0], h[0]]), np.concatenate([lb[0], low])) for Q, q, G, h, lb, ub in probs
    ]

    def run_daqp(args: tuple[np.ndarray, ...]) -> np.ndarray:
        x, _, flag, _ = daqp.solve(*args)
        assert flag == 1, flag
        return x

    def run_numpy(p: list[np.ndarray]) -> np.ndarray:
        return solve_qp_numpy(*p).u[0]

    tensors = [[torch.from_numpy(a) for a in p] for p in probs]

    def run_torch(t: list[torch.Tensor]) -> np.ndarray:
        with torch.no_grad():
            return solve_qp(*t).u[0].numpy()

    out: dict = {"problems": count}
    solvers = (("daqp_us", run_daqp, daqp_args), ("numpy_us", run_numpy, probs), ("torch_us", run_torch, tensors))
    for _, fn, data in solvers:
        for d in data[:50]:
            fn(d)  # warm-up
    times: dict[str, list[float]] = {key: [] for key, _, _ in solvers}
    sols: dict[str, list[np.ndarray]] = {key: [] for key, _, _ in solvers}
    for i in range(count):  # interleaved: a slow spell of the machine lands on every solver alike
        for key, fn, data in solvers:
            t0 = time.perf_counter()
            sols[key].append(fn(data[i]))
            times[key].append(time.perf_counter() - t0)
    answers = {key: np.array(v) for key, v in sols.items()}
    for key in times:
        out[key] = float(np.median(times[key]) * 1e6)
    out["max_abs_diff"] = float(max(np.abs(answers[k] - answers["daqp_us"]).max() for k in ("numpy_us", "torch_us")))
    out["numpy_vs_daqp"] = out["numpy_us"] / out["daqp_us"]
    out["torch_vs_daqp"] = out["torch_us"] / out["daqp_us"]
    return out


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
    floor = batch_one_floor(200 if args.quick else 2000)
    path = write("qp", {"n": 7, "m": 18, "quick": args.quick, "results": results, "batch_one_floor": floor})
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
    if floor:
        print("\n| batch 1, float64 | median (us) | against DAQP |")
        print("|---|---|---|")
        for key, label in (("daqp_us", "DAQP (C, Python call)"), ("numpy_us", "solve_qp_numpy (the layer's fast path)"),
                           ("torch_us", "solve_qp forward (torch)")):  # fmt: skip
            print(f"| {label} | {floor[key]:.1f} | {floor[key] / floor['daqp_us']:.2f}x |")
        print(f"\nlargest difference from DAQP's solution: {floor['max_abs_diff']:.2e}")
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
