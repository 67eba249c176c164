"""The iiwa's kinematics and rigid-body dynamics, compiled: ArmReach's model, without a PyBullet client.

A fixed-base chain of 7 revolute joints. :class:`ArmParameters` reads the URDF as
``arm_model.load_arm`` loads it into PyBullet (masses and inertias after ``mass_scale``
and the armature): each joint's fixed transform from its parent's link frame, its
axis, and each link's mass, centre of mass and inertia.
From them, numba-compiled functions give

- the control points, their linear Jacobians and ``J' q'`` (:func:`point_kinematics`),
  closed form: for a point ``p`` on link ``k``, ``J_i = z_i x (p - o_i)`` (``i <= k``) and
  ``J' q' = sum_i q'_i [(w_i x z_i) x (p - o_i) + z_i x (p' - o_i')]``;
- ``c(q, q')`` (gravity, Coriolis and centripetal torques) by recursive Newton-Euler, and
  ``M(q) = sum_k m_k Jv_k' Jv_k + Jw_k' I_k Jw_k`` over the links' centres of mass (:func:`dynamics`);
- PyBullet's step, ``substeps`` of semi-implicit Euler (:func:`step`);
- the small linear algebra the other compiled modules share (:func:`matvec`, :func:`solve_spd`): numba's
  ``@`` calls BLAS, whose per-call cost is ~30x these loops' at 3 x 7.

``tests/test_envs.py`` holds them equal to PyBullet's ``calculateMassMatrix``,
``calculateInverseDynamics`` and ``calculateJacobian`` to 1e-10 at random states, the
points to PyBullet's (float32) link frames to 2e-7 m. The kinematics cost ~10 us where
27 ``calculateJacobian`` calls cost a few hundred: the safety layer asks for them at
every control step.
"""

from __future__ import annotations

from dataclasses import dataclass
from xml.etree import ElementTree

import numpy as np
from numba import njit

_JIT = {"cache": True, "error_model": "numpy"}


ARMATURE_WEIGHTS = (0.5, 0.5, 1.0)  # a thin disc on the joint axis (z): the armature about z, half about x and y


def _floats(element: ElementTree.Element, key: str) -> np.ndarray:
    return np.array([float(v) for v in element.get(key, "0 0 0").split()])


def _rpy(rpy: np.ndarray) -> np.ndarray:
    """URDF's fixed-axis roll, pitch, yaw: ``Rz(yaw) Ry(pitch) Rx(roll)``."""
    (cr, cp, cy), (sr, sp, sy) = np.cos(rpy), np.sin(rpy)
    return np.array([
        [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
        [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
        [-sp, cp * sr, cp * cr],
    ])  # fmt: skip


@dataclass(frozen=True)
class ArmParameters:
    """The chain, in arrays the compiled functions take (7 joints; link ``i`` is moved by joint ``i``).

    ``joint_rot (7, 3, 3)``, ``joint_pos (7, 3)``: link ``i``'s frame at ``q_i = 0`` in link ``i - 1``'s
    (link -1: the world; the base is fixed). ``axis (7, 3)``: joint ``i``'s axis in link ``i``'s frame.
    ``mass (7,)``, ``com (7, 3)`` the centre of mass in the link frame, ``inertia (7, 3, 3)`` about the
    centre of mass in the link frame. ``gravity (3,)``.
    """

    joint_rot: np.ndarray
    joint_pos: np.ndarray
    axis: np.ndarray
    mass: np.ndarray
    com: np.ndarray
    inertia: np.ndarray
    gravity: np.ndarray

    @classmethod
    def from_urdf(
        cls, text: str, mass_scale: float, armature: float, gravity: tuple[float, float, float]
    ) -> ArmParameters:
        """From the URDF's text, as :func:`~safeliquid.envs.arm_model.load_arm` changes it: masses and
        inertias times ``mass_scale``, and a thin-disc rotor of inertia ``armature`` about each joint axis (z),
        half of it about x and y. Every link's inertia must be diagonal in a frame aligned with its own."""
        root = ElementTree.fromstring(text)
        joints = [j for j in root.iter("joint") if j.get("type") == "revolute"]
        links = {link.get("name"): link for link in root.iter("link")}
        rot, pos, axis, mass, com, inertia = [], [], [], [], [], []
        for joint in joints:
            origin = joint.find("origin")
            rot.append(_rpy(_floats(origin, "rpy")))
            pos.append(_floats(origin, "xyz"))
            axis.append(_floats(joint.find("axis"), "xyz"))
            inertial = links[joint.find("child").get("link")].find("inertial")
            if np.any(_floats(inertial.find("origin"), "rpy")):
                raise ValueError(f"link {joint.find('child').get('link')}: a rotated inertial frame is not supported")
            com.append(_floats(inertial.find("origin"), "xyz"))
            mass.append(float(inertial.find("mass").get("value")) * mass_scale)
            tensor = inertial.find("inertia")
            diagonal = [float(tensor.get(k)) for k in ("ixx", "iyy", "izz")]
            if any(float(tensor.get(k, 0.0)) for k in ("ixy", "ixz", "iyz")):
                raise ValueError(f"link {joint.find('child').get('link')}: a non-diagonal inertia is not supported")
            inertia.append(
                np.diag([i * mass_scale + armature * w for i, w in zip(diagonal, ARMATURE_WEIGHTS, strict=True)])
            )
        return cls(*(np.array(a, dtype=np.float64) for a in (rot, pos, axis, mass, com, inertia)),
                   np.array(gravity, dtype=np.float64))  # fmt: skip

    def arrays(self) -> tuple[np.ndarray, ...]:
        return self.joint_rot, self.joint_pos, self.axis, self.mass, self.com, self.inertia, self.gravity


@njit(**_JIT)
def _cross(a: np.ndarray, b: np.ndarray, out: np.ndarray) -> None:
    """``out = a x b`` (3-vectors)."""
    out[0] = a[1] * b[2] - a[2] * b[1]
    out[1] = a[2] * b[0] - a[0] * b[2]
    out[2] = a[0] * b[1] - a[1] * b[0]


@njit(**_JIT)
def _rot(R: np.ndarray, v: np.ndarray, out: np.ndarray) -> None:
    """``out = R v`` (3 x 3 by 3)."""
    for r in range(3):
        out[r] = R[r, 0] * v[0] + R[r, 1] * v[1] + R[r, 2] * v[2]


@njit(**_JIT)
def matvec(A: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``A x`` for a small ``A (r, c)``, or ``A.T`` for ``A' x`` (numba's ``@`` calls BLAS, ~30x slower at
    these sizes)."""
    out = np.zeros(A.shape[0])
    for r in range(A.shape[0]):
        for c in range(A.shape[1]):
            out[r] += A[r, c] * x[c]
    return out


@njit(**_JIT)
def dot(a: np.ndarray, b: np.ndarray) -> float:
    """``a' b`` for small vectors."""
    s = 0.0
    for i in range(a.shape[0]):
        s += a[i] * b[i]
    return s


@njit(**_JIT)
def frames(q: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """World rotation ``(7, 3, 3)`` and origin ``(7, 3)`` of every link frame at ``q (7,)`` (joint axes z)."""
    n = q.shape[0]
    R = np.empty((n, 3, 3))
    o = np.empty((n, 3))
    fixed = np.empty((3, 3))
    step = np.empty(3)
    for i in range(n):
        if i == 0:
            fixed[:] = joint_rot[0]
            o[0] = joint_pos[0]
        else:
            for r in range(3):
                for k in range(3):
                    fixed[r, k] = R[i - 1, r, 0] * joint_rot[i, 0, k] + R[i - 1, r, 1] * joint_rot[i, 1, k] \
                        + R[i - 1, r, 2] * joint_rot[i, 2, k]  # fmt: skip
            _rot(R[i - 1], joint_pos[i], step)
            for r in range(3):
                o[i, r] = o[i - 1, r] + step[r]
        c, s = np.cos(q[i]), np.sin(q[i])
        for r in range(3):  # fixed @ Rz(q_i)
            R[i, r, 0] = c * fixed[r, 0] + s * fixed[r, 1]
            R[i, r, 1] = -s * fixed[r, 0] + c * fixed[r, 1]
            R[i, r, 2] = fixed[r, 2]
    return R, o


@njit(**_JIT)
def points(
    q: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray, links: np.ndarray, offsets: np.ndarray
) -> np.ndarray:
    """The control points ``(P, 3)``: ``offsets (P, 3)`` in the frames of ``links (P,)`` at ``q (7,)``."""
    R, o = frames(q, joint_rot, joint_pos)
    out = np.empty((links.shape[0], 3))
    for k in range(links.shape[0]):
        _rot(R[links[k]], offsets[k], out[k])
        for r in range(3):
            out[k, r] += o[links[k], r]
    return out


@njit(**_JIT)
def point_kinematics(
    q: np.ndarray, qd: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray, axis: np.ndarray,
    links: np.ndarray, offsets: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """Control points ``(P, 3)``, their linear Jacobians ``(P, 3, 7)`` and ``J' q' (P, 3)`` at ``q, qd (7,)``."""
    n = q.shape[0]
    R, o = frames(q, joint_rot, joint_pos)
    z = np.empty((n, 3))
    zd = np.empty((n, 3))  # each axis' rate, w_i x z_i
    w = np.zeros(3)  # the current link's angular velocity
    od = np.zeros((n, 3))  # each frame origin's velocity
    r = np.empty(3)
    t = np.empty(3)
    for i in range(n):
        _rot(R[i], axis[i], z[i])
        if i > 0:
            for k in range(3):
                r[k] = o[i, k] - o[i - 1, k]
            _cross(w, r, t)
            for k in range(3):
                od[i, k] = od[i - 1, k] + t[k]
        for k in range(3):
            w[k] += qd[i] * z[i, k]
        _cross(w, z[i], zd[i])
    P = links.shape[0]
    pts = np.empty((P, 3))
    J = np.zeros((P, 3, n))
    jdot = np.zeros((P, 3))
    col = np.empty(3)
    vel = np.empty(3)
    a = np.empty(3)
    for k in range(P):
        top = links[k]
        _rot(R[top], offsets[k], pts[k])
        for c in range(3):
            pts[k, c] += o[top, c]
            vel[c] = 0.0
        for i in range(top + 1):
            for c in range(3):
                r[c] = pts[k, c] - o[i, c]
            _cross(z[i], r, col)
            for c in range(3):
                J[k, c, i] = col[c]
                vel[c] += qd[i] * col[c]
        for i in range(top + 1):
            for c in range(3):
                r[c] = pts[k, c] - o[i, c]
            _cross(zd[i], r, a)
            for c in range(3):
                r[c] = vel[c] - od[i, c]
            _cross(z[i], r, t)
            for c in range(3):
                jdot[k, c] += qd[i] * (a[c] + t[c])
    return pts, J, jdot


@njit(**_JIT)
def _world_inertia(R: np.ndarray, com: np.ndarray, inertia: np.ndarray, iw: np.ndarray, cw: np.ndarray) -> None:
    """Each link's inertia in world axes, ``iw (7, 3, 3)`` = ``R I R'`` (``I`` diagonal in the link frame,
    as :class:`ArmParameters` requires), and its centre of mass relative to its frame origin, ``cw (7, 3)``
    = ``R com``, both written in place."""
    for k in range(R.shape[0]):
        _rot(R[k], com[k], cw[k])
        for r in range(3):
            for s in range(r + 1):
                v = R[k, r, 0] * inertia[k, 0, 0] * R[k, s, 0] + R[k, r, 1] * inertia[k, 1, 1] * R[k, s, 1] \
                    + R[k, r, 2] * inertia[k, 2, 2] * R[k, s, 2]  # fmt: skip
                iw[k, r, s] = v
                iw[k, s, r] = v


@njit(**_JIT)
def _newton_euler(
    qd: np.ndarray, gravity: np.ndarray, o: np.ndarray, z: np.ndarray, mass: np.ndarray, cw: np.ndarray,
    iw: np.ndarray, work: np.ndarray, tmp: np.ndarray, tau: np.ndarray,
) -> None:  # fmt: skip
    """The bias torques ``tau (7,)`` = ``c(q, q')`` (``q'' = 0``) at ``qd`` for the frame origins ``o`` (world
    axes ``z``), the links' ``cw`` and ``iw`` (:func:`_world_inertia`). ``work (7, 2, 3)``, ``tmp (8, 3)``
    scratch."""
    n = qd.shape[0]
    w, wd, acc, t1, t2, r, f_next, n_next = tmp[0], tmp[1], tmp[2], tmp[3], tmp[4], tmp[5], tmp[6], tmp[7]
    for k in range(3):
        w[k], wd[k], acc[k] = 0.0, 0.0, -gravity[k]  # the current frame origin's linear acceleration
    for i in range(n):
        force, moment, c = work[i, 0], work[i, 1], cw[i]
        if i > 0:
            for k in range(3):
                r[k] = o[i, k] - o[i - 1, k]
            _cross(wd, r, t1)
            _cross(w, r, t2)
            _cross(w, t2, r)
            for k in range(3):
                acc[k] += t1[k] + r[k]
        _cross(w, z[i], t1)
        for k in range(3):
            wd[k] += qd[i] * t1[k]
            w[k] += qd[i] * z[i, k]
        _cross(wd, c, t1)
        _cross(w, c, t2)
        _cross(w, t2, r)
        for k in range(3):
            force[k] = mass[i] * (acc[k] + t1[k] + r[k])
        _rot(iw[i], wd, moment)
        _rot(iw[i], w, t1)
        _cross(w, t1, t2)
        for k in range(3):
            moment[k] += t2[k]
    for k in range(3):
        f_next[k], n_next[k] = 0.0, 0.0
    for i in range(n - 1, -1, -1):
        force, moment, c = work[i, 0], work[i, 1], cw[i]
        _cross(c, force, t1)
        for k in range(3):
            n_next[k] += moment[k] + t1[k]
            f_next[k] += force[k]
        tau[i] = n_next[0] * z[i, 0] + n_next[1] * z[i, 1] + n_next[2] * z[i, 2]
        if i > 0:  # carry to the parent's origin
            for k in range(3):
                r[k] = o[i, k] - o[i - 1, k]
            _cross(r, f_next, t1)
            for k in range(3):
                n_next[k] += t1[k]


@njit(**_JIT)
def dynamics(
    q: np.ndarray, qd: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray, axis: np.ndarray,
    mass: np.ndarray, com: np.ndarray, inertia: np.ndarray, gravity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """``M(q) (7, 7)`` and ``c(q, q') (7,)`` (``M q'' + c = tau``) at one state."""
    n = q.shape[0]
    R, o = frames(q, joint_rot, joint_pos)
    # one scratch block: z (7, 3), iw (7, 3, 3), cw (7, 3), work (7, 2, 3), tmp (8, 3), jv (7, 3), iz (7, 3)
    block = np.empty(n * 3 + n * 9 + n * 3 + n * 6 + 24 + n * 6)
    z = block[: 3 * n].reshape((n, 3))
    iw = block[3 * n : 12 * n].reshape((n, 3, 3))
    cw = block[12 * n : 15 * n].reshape((n, 3))
    work = block[15 * n : 21 * n].reshape((n, 2, 3))
    tmp = block[21 * n : 21 * n + 24].reshape((8, 3))
    jv = block[21 * n + 24 : 24 * n + 24].reshape((n, 3))
    iz = block[24 * n + 24 :].reshape((n, 3))
    for i in range(n):
        _rot(R[i], axis[i], z[i])
    _world_inertia(R, com, inertia, iw, cw)
    bias = np.empty(n)
    _newton_euler(qd, gravity, o, z, mass, cw, iw, work, tmp, bias)
    return _mass_matrix(o, z, mass, cw, iw, jv, iz, tmp[0]), bias


@njit(**_JIT)
def _mass_matrix(
    o: np.ndarray, z: np.ndarray, mass: np.ndarray, cw: np.ndarray, iw: np.ndarray, jv: np.ndarray,
    iz: np.ndarray, r: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """``M = sum_k m_k Jv_k' Jv_k + Jw_k' I_k Jw_k`` over the links ``k``: ``Jv_k`` the Jacobian of link
    ``k``'s centre of mass ``o_k + cw_k`` (columns ``z_i x (c_k - o_i)``, ``i <= k``), ``Jw_k`` its angular
    one (``z_i``), ``I_k`` its inertia in world axes ``iw_k``. ``jv``, ``iz (7, 3)``, ``r (3,)`` scratch."""
    n = z.shape[0]
    M = np.zeros((n, n))
    for k in range(n):
        for i in range(k + 1):
            for s in range(3):
                r[s] = o[k, s] + cw[k, s] - o[i, s]
            _cross(z[i], r, jv[i])
            _rot(iw[k], z[i], iz[i])
        for i in range(k + 1):
            for j in range(i + 1):
                v = mass[k] * (jv[i, 0] * jv[j, 0] + jv[i, 1] * jv[j, 1] + jv[i, 2] * jv[j, 2])
                v += z[i, 0] * iz[j, 0] + z[i, 1] * iz[j, 1] + z[i, 2] * iz[j, 2]
                M[i, j] += v
    for i in range(n):
        for j in range(i):
            M[j, i] = M[i, j]
    return M


@njit(**_JIT)
def solve_spd(M: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``M^-1 b`` by Cholesky (M symmetric positive definite, small)."""
    return _cholesky_solve(_cholesky(M), b)


@njit(**_JIT)
def _cholesky(M: np.ndarray) -> np.ndarray:
    """The lower Cholesky factor ``L`` of a small symmetric positive definite ``M``."""
    n = M.shape[0]
    L = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1):
            s = M[i, j]
            for k in range(j):
                s -= L[i, k] * L[j, k]
            L[i, j] = np.sqrt(s) if i == j else s / L[j, j]
    return L


@njit(**_JIT)
def _cholesky_solve(L: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``(L L')^-1 b``."""
    n = b.shape[0]
    y = np.empty(n)
    for i in range(n):
        s = b[i]
        for k in range(i):
            s -= L[i, k] * y[k]
        y[i] = s / L[i, i]
    for i in range(n - 1, -1, -1):
        s = y[i]
        for k in range(i + 1, n):
            s -= L[k, i] * y[k]
        y[i] = s / L[i, i]
    return y


@njit(**_JIT)
def step(
    x: np.ndarray, u: np.ndarray, dt: float, substeps: int, joint_rot: np.ndarray, joint_pos: np.ndarray,
    axis: np.ndarray, mass: np.ndarray, com: np.ndarray, inertia: np.ndarray, gravity: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """``substeps`` of semi-implicit Euler (PyBullet's) under torques ``u (B, 7)`` from ``x (B, 14)``."""
    out = x.copy()
    n = u.shape[1]
    h = dt / substeps
    for b in range(x.shape[0]):
        for _ in range(substeps):
            M, c = dynamics(out[b, :n], out[b, n:], joint_rot, joint_pos, axis, mass, com, inertia, gravity)
            qdd = solve_spd(M, u[b] - c)
            for j in range(n):
                out[b, n + j] += h * qdd[j]
                out[b, j] += h * out[b, n + j]
    return out


@njit(**_JIT)
def _inverse_spd(M: np.ndarray) -> np.ndarray:
    n = M.shape[0]
    out = np.empty((n, n))
    unit = np.zeros(n)
    L = _cholesky(M)  # one factorisation for the n columns
    for j in range(n):
        unit[j] = 1.0
        out[:, j] = _cholesky_solve(L, unit)
        unit[j] = 0.0
    return out


@njit(**_JIT)
def barrier_values(
    q: np.ndarray, pts: np.ndarray, center: np.ndarray, reach: float, low: np.ndarray, high: np.ndarray
) -> np.ndarray:  # fmt: skip
    """``(P + 2n,)``: ``|p - c|^2 - reach^2`` for each point ``pts (P, 3)``, then ``q_j - low_j``,
    ``high_j - q_j`` for each joint."""
    P, n = pts.shape[0], q.shape[0]
    out = np.empty(P + 2 * n)
    for k in range(P):
        s = 0.0
        for c in range(3):
            s += (pts[k, c] - center[c]) ** 2
        out[k] = s - reach * reach
    for j in range(n):
        out[P + 2 * j] = q[j] - low[j]
        out[P + 2 * j + 1] = high[j] - q[j]
    return out


@njit(**_JIT)
def hocbf_terms(
    q: np.ndarray, qd: np.ndarray, center: np.ndarray, reach: float, low: np.ndarray, high: np.ndarray,
    links: np.ndarray, offsets: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray, axis: np.ndarray,
    mass: np.ndarray, com: np.ndarray, inertia: np.ndarray, gravity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """ArmReach's HOCBF pieces at one state (``arm_terms.arm_terms``, which documents them): ``A (P + 2n, n)``
    the input gains ``L_g L_f h``, ``L (P + 2n, 3)`` the rows ``[h, L_f h, L_f^2 h]``."""
    n = q.shape[0]
    M, bias = dynamics(q, qd, joint_rot, joint_pos, axis, mass, com, inertia, gravity)
    m_inv = _inverse_spd(M)
    a0 = -matvec(m_inv, bias)
    pts, J, jdot = point_kinematics(q, qd, joint_rot, joint_pos, axis, links, offsets)
    P = pts.shape[0]
    A = np.zeros((P + 2 * n, n))
    L = np.empty((P + 2 * n, 3))
    h = barrier_values(q, pts, center, reach, low, high)
    row = np.empty(n)
    for k in range(P):
        vel = matvec(J[k], qd)
        acc = jdot[k] + matvec(J[k], a0)
        d = pts[k] - center
        L[k, 0] = h[k]
        L[k, 1] = 2.0 * dot(d, vel)
        L[k, 2] = 2.0 * dot(vel, vel) + 2.0 * dot(d, acc)
        for j in range(n):
            row[j] = 2.0 * (d[0] * J[k, 0, j] + d[1] * J[k, 1, j] + d[2] * J[k, 2, j])
        A[k] = matvec(m_inv.T, row)
    for j in range(n):
        lo, hi = P + 2 * j, P + 2 * j + 1
        L[lo, 0], L[lo, 1], L[lo, 2] = h[lo], qd[j], a0[j]
        L[hi, 0], L[hi, 1], L[hi, 2] = h[hi], -qd[j], -a0[j]
        A[lo] = m_inv[j]
        A[hi] = -m_inv[j]
    return A, L


@njit(**_JIT)
def values(
    states: np.ndarray, center: np.ndarray, reach: float, low: np.ndarray, high: np.ndarray, links: np.ndarray,
    offsets: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray,
) -> np.ndarray:  # fmt: skip
    """:func:`barrier_values` at every state of ``states (B, 2n)`` (the points placed by :func:`points`):
    ``(B, P + 2n)``."""
    n = low.shape[0]
    out = np.empty((states.shape[0], links.shape[0] + 2 * n))
    for b in range(states.shape[0]):
        q = states[b, :n]
        out[b] = barrier_values(q, points(q, joint_rot, joint_pos, links, offsets), center, reach, low, high)
    return out


@njit(**_JIT)
def terms(
    states: np.ndarray, center: np.ndarray, reach: float, low: np.ndarray, high: np.ndarray, links: np.ndarray,
    offsets: np.ndarray, joint_rot: np.ndarray, joint_pos: np.ndarray, axis: np.ndarray, mass: np.ndarray,
    com: np.ndarray, inertia: np.ndarray, gravity: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """:func:`hocbf_terms` at every state of ``states (B, 2n)``: ``A (B, P + 2n, n)``, ``L (B, P + 2n, 3)``."""
    n = low.shape[0]
    K = links.shape[0] + 2 * n
    A = np.empty((states.shape[0], K, n))
    L = np.empty((states.shape[0], K, 3))
    for b in range(states.shape[0]):
        A[b], L[b] = hocbf_terms(
            states[b, :n].copy(), states[b, n:].copy(), center, reach, low, high, links, offsets, joint_rot,
            joint_pos, axis, mass, com, inertia, gravity,
        )  # fmt: skip
    return A, L
