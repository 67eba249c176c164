"""The promise under attack: through SafetyFilterWrapper, each certified environment's adversaries (random,
bang-bang, full input towards the nearest constraint, grazing, pumping the pole, ramming the joint limits, the arm
at the sphere at full torque) make no violating step, no
contact and no infeasible solve outside a reported fallback; without the filter the same adversaries do
violate. The large run is ``benchmarks/bench_adversarial.py``."""

import gymnasium as gym
import pytest

import safeliquid.envs  # noqa: F401 - registers the environments
from safeliquid.envs import ENV_IDS
from safeliquid.envs.adversaries import adversaries
from safeliquid.safety import SafetyFilterWrapper
from safeliquid.safety.adversaries import attack

CERTIFIED = ENV_IDS
CASES = [(env_id, i) for env_id in CERTIFIED for i in range(len(adversaries(env_id)))]


@pytest.mark.parametrize("env_id,index", CASES, ids=[f"{e.split('/')[1]}-{adversaries(e)[i].name}" for e, i in CASES])
def test_the_filter_keeps_every_barrier_against_each_adversary(env_id, index):
    env = SafetyFilterWrapper(gym.make(env_id))
    result = attack(env, adversaries(env_id)[index], steps=600, seed=10)
    env.close()
    assert result.violating_steps == 0 and result.contacts == 0 and result.min_h >= 0.0, result
    assert result.unreported_infeasible == 0, result


@pytest.mark.parametrize("env_id", CERTIFIED)
def test_the_adversaries_violate_without_the_filter(env_id):
    env = gym.make(env_id)
    for adversary in adversaries(env_id)[1:]:
        result = attack(env, adversary, steps=600, seed=10)
        assert result.violating_steps > 0, (adversary.name, result)
    env.close()
