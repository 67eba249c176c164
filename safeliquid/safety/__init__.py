"""Safety constraints in Python: models, barriers, HOCBF rows, the safety filter and the BarrierNet layer."""

from safeliquid.safety.barriers import CLASS_K, Barrier, cubic, find_relative_degree, linear
from safeliquid.safety.braking import brake, braking_obstacles, braking_terms, braking_values
from safeliquid.safety.certify import Backup, Certificate, UncertifiedWarning, certify
from safeliquid.safety.constraints import ConstraintSet
from safeliquid.safety.filter import SafetyFilter
from safeliquid.safety.layer import BarrierLayer, FilterRecord, SampledData
from safeliquid.safety.models import (
    ControlAffine,
    DoubleIntegrator,
    Manipulator,
    SingleIntegrator,
    Unicycle,
    joint_velocity,
)
from safeliquid.safety.primitives import (
    box_obstacle,
    cylinder_obstacle,
    half_space,
    position,
    sphere_obstacle,
    state_box,
)
from safeliquid.safety.vector_wrapper import SafetyFilterVectorWrapper
from safeliquid.safety.wrapper import SafetyFilterWrapper

__all__ = [
    "CLASS_K",
    "Backup",
    "Barrier",
    "BarrierLayer",
    "Certificate",
    "ConstraintSet",
    "ControlAffine",
    "DoubleIntegrator",
    "FilterRecord",
    "Manipulator",
    "SafetyFilter",
    "SafetyFilterVectorWrapper",
    "SafetyFilterWrapper",
    "SampledData",
    "SingleIntegrator",
    "UncertifiedWarning",
    "Unicycle",
    "box_obstacle",
    "brake",
    "braking_obstacles",
    "braking_terms",
    "braking_values",
    "certify",
    "cubic",
    "cylinder_obstacle",
    "find_relative_degree",
    "half_space",
    "joint_velocity",
    "linear",
    "position",
    "sphere_obstacle",
    "state_box",
]
