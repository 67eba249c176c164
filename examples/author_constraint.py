"""Author a safety constraint in plain torch and filter a random policy with it.

A planar robot (double integrator, force-limited) must stay out of a disc and
below a speed limit. Only h(x) >= 0 is written; the library finds each
constraint's relative degree and derives the HOCBF rows by autograd.

    python examples/author_constraint.py
"""

import torch

from safeliquid.safety import Barrier, ConstraintSet, DoubleIntegrator, SafetyFilter

# --- the constraint, as a user writes it (11 lines) -----------------------------------
model = DoubleIntegrator(dim=2, mass=1.0)  # state [px, py, vx, vy], input: force
centre, radius = torch.tensor([1.0, 0.0], dtype=torch.float64), 0.5
keep_out = Barrier("keep_out", lambda x: (x[:, :2] - centre).square().sum(1) - radius**2)
speed_limit = Barrier("speed_limit", lambda x: 1.5**2 - x[:, 2:].square().sum(1))
constraints = ConstraintSet(
    model, [keep_out, speed_limit], samples=torch.randn(64, 4, dtype=torch.float64),
    u_min=[-3.0, -3.0], u_max=[3.0, 3.0],
)  # fmt: skip
safety = SafetyFilter(constraints, dt=0.05)
# ---------------------------------------------------------------------------------------

torch.manual_seed(0)
x = torch.tensor([[-1.0, 0.05, 0.0, 0.0]], dtype=torch.float64)
lowest = {name: float("inf") for name in constraints.names}
interventions = 0
for _ in range(400):
    u_random = torch.tensor([[3.0, 0.0]], dtype=torch.float64) + torch.randn(1, 2, dtype=torch.float64)
    u, record = safety.filter(x, u_random.clamp(-3.0, 3.0))
    interventions += int(record.intervention[0] > 1e-6)
    x = model.step(x, u, 0.05)
    for name, value in zip(constraints.names, constraints.values(x)[0], strict=True):
        lowest[name] = min(lowest[name], float(value))
print("relative degrees:", {b.name: b.relative_degree for b in constraints.barriers})
print("lowest barrier value over 400 steps (>= 0 is safe):", {k: round(v, 6) for k, v in lowest.items()})
print(f"the filter changed the random action in {interventions} of 400 steps")
