import numpy as np
import pytest
from ncps import wirings as ref

from safeliquid.nn import NCP, AutoNCP, FullyConnected, Wiring


def test_nineteen_neuron_policy_in_one_line():
    w = AutoNCP(19, 2).build(8)
    assert (w.units, w.output_dim, w.input_dim) == (19, 2, 8)
    assert set(np.unique(w.adjacency)) <= {-1, 0, 1}
    assert w.synapse_count > 0 and w.sensory_synapse_count > 0


@pytest.mark.parametrize(
    "units,outputs,sparsity,seed,inputs", [(19, 2, 0.5, 22222, 8), (32, 4, 0.7, 3, 5), (12, 1, 0.3, 7, 2)]
)
def test_autoncp_reproduces_reference_circuit(units, outputs, sparsity, seed, inputs):
    ours = AutoNCP(units, outputs, sparsity, seed).build(inputs)
    theirs = ref.AutoNCP(units, outputs, sparsity, seed)
    theirs.build(inputs)
    np.testing.assert_array_equal(ours.adjacency, theirs.adjacency_matrix)
    np.testing.assert_array_equal(ours.sensory_adjacency, theirs.sensory_adjacency_matrix)


def test_fully_connected_reproduces_reference():
    ours = FullyConnected(6, 2).build(3)
    theirs = ref.FullyConnected(6, 2)
    theirs.build(3)
    np.testing.assert_array_equal(ours.adjacency, theirs.adjacency_matrix)
    np.testing.assert_array_equal(ours.sensory_adjacency, theirs.sensory_adjacency_matrix)


def test_seeded_and_reproducible():
    a, b, c = (AutoNCP(19, 2, seed=s).build(8) for s in (1, 1, 2))
    np.testing.assert_array_equal(a.adjacency, b.adjacency)
    assert not np.array_equal(a.adjacency, c.adjacency)


def test_ncp_layers_are_connected():
    w = NCP(6, 4, 2, sensory_fanout=2, inter_fanout=2, recurrent_command_synapses=3, motor_fanin=2).build(3)
    inter, command, motor = w.layers()
    assert all(np.abs(w.sensory_adjacency[:, j]).sum() > 0 for j in inter)
    assert all(np.abs(w.adjacency[inter][:, j]).sum() > 0 for j in command)
    assert all(np.abs(w.adjacency[command][:, j]).sum() > 0 for j in motor)
    assert np.abs(w.adjacency[np.ix_(motor, inter + command)]).sum() == 0  # motor neurons feed nothing back


def test_bad_wirings_are_named():
    with pytest.raises(ValueError, match="outputs must be less than units - 2"):
        AutoNCP(5, 4)
    with pytest.raises(ValueError, match="sparsity"):
        AutoNCP(19, 2, sparsity=0.95)
    with pytest.raises(ValueError, match="motor_fanin"):
        NCP(4, 2, 1, 1, 1, 1, motor_fanin=3)
    with pytest.raises(ValueError, match="-1, 0 or \\+1"):
        Wiring.from_adjacency(np.full((2, 2), 2), np.zeros((1, 2)), 1)
    with pytest.raises(ValueError, match="built for 8 inputs"):
        AutoNCP(19, 2).build(8).build(9)
