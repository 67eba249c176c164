"""Wirings: which neuron (and which input) has a synapse onto which neuron.

A wiring is two signed adjacency matrices with entries in {-1, 0, +1}:
``adjacency[i, j]`` for neuron i -> neuron j and ``sensory_adjacency[k, j]``
for input k -> neuron j. The sign is the synapse polarity (it initialises the
reversal potential: excitatory +1, inhibitory -1). Neurons ``0 .. output_dim-1``
are the motor neurons whose states are the cell's outputs.

The generators reproduce the algorithms of the reference library ncps 1.0.1
draw for draw, so the same seed gives the same circuit in both libraries.
"""

from __future__ import annotations

import numpy as np


class Wiring:
    """A fixed sparse circuit: ``units`` neurons, ``input_dim`` inputs, ``output_dim`` motor neurons.

    Build a custom one with :meth:`from_adjacency`; the subclasses generate
    standard circuits. ``build(input_dim)`` fixes the number of inputs (the
    cells call it) and draws the sensory synapses.
    """

    def __init__(self, units: int, output_dim: int | None = None) -> None:
        if not isinstance(units, (int, np.integer)) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        output_dim = units if output_dim is None else output_dim
        if not 1 <= output_dim <= units:
            raise ValueError(f"output_dim must be in [1, units={units}], got {output_dim}")
        self.units = int(units)
        self.output_dim = int(output_dim)
        self.input_dim: int | None = None
        self.adjacency = np.zeros((units, units), dtype=np.int8)
        self.sensory_adjacency: np.ndarray | None = None

    # -- construction -------------------------------------------------------------
    @classmethod
    def from_adjacency(cls, adjacency: np.ndarray, sensory_adjacency: np.ndarray, output_dim: int) -> Wiring:
        """A wiring from explicit signed matrices ``(N, N)`` and ``(in, N)`` with entries in {-1, 0, 1}."""
        adjacency = np.asarray(adjacency)
        sensory_adjacency = np.asarray(sensory_adjacency)
        n = adjacency.shape[0]
        if adjacency.shape != (n, n):
            raise ValueError(f"adjacency must be square (N, N), got {adjacency.shape}")
        if sensory_adjacency.ndim != 2 or sensory_adjacency.shape[1] != n:
            raise ValueError(f"sensory_adjacency must have shape (in, {n}), got {sensory_adjacency.shape}")
        for name, m in (("adjacency", adjacency), ("sensory_adjacency", sensory_adjacency)):
            if not np.isin(m, (-1, 0, 1)).all():
                raise ValueError(f"{name} entries must be -1, 0 or +1 (synapse polarity)")
        w = cls.__new__(cls)
        Wiring.__init__(w, n, output_dim)
        w.adjacency = adjacency.astype(np.int8)
        w.input_dim = sensory_adjacency.shape[0]
        w.sensory_adjacency = sensory_adjacency.astype(np.int8)
        return w

    def build(self, input_dim: int) -> Wiring:
        """Fix the number of inputs and draw the sensory synapses (idempotent for the same ``input_dim``)."""
        if self.input_dim is not None:
            if self.input_dim != input_dim:
                raise ValueError(
                    f"this wiring was built for {self.input_dim} inputs, cannot rebuild it for {input_dim}"
                )
            return self
        if input_dim < 1:
            raise ValueError(f"input_dim must be positive, got {input_dim}")
        self.input_dim = int(input_dim)
        self.sensory_adjacency = np.zeros((input_dim, self.units), dtype=np.int8)
        self._build_sensory()
        return self

    def _build_sensory(self) -> None:
        """Draw the sensory synapses; subclasses override."""

    @property
    def is_built(self) -> bool:
        return self.input_dim is not None

    # -- inspection ---------------------------------------------------------------
    @property
    def synapse_count(self) -> int:
        return int(np.abs(self.adjacency).sum())

    @property
    def sensory_synapse_count(self) -> int:
        return 0 if self.sensory_adjacency is None else int(np.abs(self.sensory_adjacency).sum())

    def layers(self) -> list[list[int]]:
        """Neuron indices per layer, from the input side to the motor side."""
        return [list(range(self.units))]

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(units={self.units}, inputs={self.input_dim}, outputs={self.output_dim}, "
            f"synapses={self.synapse_count}, sensory_synapses={self.sensory_synapse_count})"
        )


class FullyConnected(Wiring):
    """Every neuron and every input connects to every neuron; polarity +1 with probability 2/3."""

    def __init__(self, units: int, output_dim: int | None = None, seed: int = 1111, self_connections: bool = True):
        super().__init__(units, output_dim)
        self._rng = np.random.default_rng(seed)
        for src in range(units):
            for dest in range(units):
                if src == dest and not self_connections:
                    continue
                self.adjacency[src, dest] = self._rng.choice([-1, 1, 1])

    def _build_sensory(self) -> None:
        assert self.sensory_adjacency is not None and self.input_dim is not None
        for src in range(self.input_dim):
            for dest in range(self.units):
                self.sensory_adjacency[src, dest] = self._rng.choice([-1, 1, 1])


class NCP(Wiring):
    """Neural Circuit Policy wiring (Lechner et al. 2020): sensory -> inter -> command (recurrent) -> motor.

    Neuron order: motor ``[0, motor)``, command, then inter. Fan-outs/fan-ins
    are per source/target neuron; neurons left unreachable by the random draw
    get the mean fan-in so the circuit is connected.
    """

    def __init__(
        self,
        inter_neurons: int,
        command_neurons: int,
        motor_neurons: int,
        sensory_fanout: int,
        inter_fanout: int,
        recurrent_command_synapses: int,
        motor_fanin: int,
        seed: int = 22222,
    ) -> None:
        for name, value in (
            ("inter_neurons", inter_neurons),
            ("command_neurons", command_neurons),
            ("motor_neurons", motor_neurons),
        ):
            if value < 1:
                raise ValueError(f"{name} must be at least 1, got {value}")
        if motor_fanin > command_neurons:
            raise ValueError(f"motor_fanin={motor_fanin} exceeds command_neurons={command_neurons}")
        if sensory_fanout > inter_neurons:
            raise ValueError(f"sensory_fanout={sensory_fanout} exceeds inter_neurons={inter_neurons}")
        if inter_fanout > command_neurons:
            raise ValueError(f"inter_fanout={inter_fanout} exceeds command_neurons={command_neurons}")
        super().__init__(inter_neurons + command_neurons + motor_neurons, motor_neurons)
        self._rng = np.random.RandomState(seed)
        self.motor = list(range(motor_neurons))
        self.command = list(range(motor_neurons, motor_neurons + command_neurons))
        self.inter = list(range(motor_neurons + command_neurons, self.units))
        self.sensory_fanout = sensory_fanout
        self.inter_fanout = inter_fanout
        self.recurrent_command_synapses = recurrent_command_synapses
        self.motor_fanin = motor_fanin

    def layers(self) -> list[list[int]]:
        return [self.inter, self.command, self.motor]

    def _connect_layer(self, sources: list[int], targets: list[int], fanout: int, sensory: bool) -> None:
        """Each source picks ``fanout`` targets; targets left without input get the mean fan-in."""
        rng = self._rng
        add = self._add_sensory if sensory else self._add
        unreachable = list(targets)
        for src in sources:
            for dest in rng.choice(targets, size=fanout, replace=False):
                if dest in unreachable:
                    unreachable.remove(dest)
                add(src, dest, rng.choice([-1, 1]))
        mean_fanin = int(np.clip(int(len(sources) * fanout / len(targets)), 1, len(sources)))
        for dest in unreachable:
            for src in rng.choice(sources, size=mean_fanin, replace=False):
                add(src, dest, rng.choice([-1, 1]))

    def _add(self, src: int, dest: int, polarity: int) -> None:
        self.adjacency[src, dest] = polarity

    def _add_sensory(self, src: int, dest: int, polarity: int) -> None:
        assert self.sensory_adjacency is not None
        self.sensory_adjacency[src, dest] = polarity

    def _build_sensory(self) -> None:
        # The whole circuit is drawn here, in the reference's order, because the
        # sensory layer consumes the random stream first.
        assert self.input_dim is not None
        rng = self._rng
        self._connect_layer(list(range(self.input_dim)), self.inter, self.sensory_fanout, sensory=True)
        self._connect_layer(self.inter, self.command, self.inter_fanout, sensory=False)
        for _ in range(self.recurrent_command_synapses):
            src, dest = rng.choice(self.command), rng.choice(self.command)
            self._add(src, dest, rng.choice([-1, 1]))
        # command -> motor: each motor neuron picks `motor_fanin` command neurons.
        unreachable = list(self.command)
        for dest in self.motor:
            for src in rng.choice(self.command, size=self.motor_fanin, replace=False):
                if src in unreachable:
                    unreachable.remove(src)
                self._add(src, dest, rng.choice([-1, 1]))
        mean_fanout = int(np.clip(int(len(self.motor) * self.motor_fanin / len(self.command)), 1, len(self.motor)))
        for src in unreachable:
            for dest in rng.choice(self.motor, size=mean_fanout, replace=False):
                self._add(src, dest, rng.choice([-1, 1]))


class AutoNCP(NCP):
    """An NCP sized from the total number of neurons and outputs: ``AutoNCP(19, 2)`` is a 19-neuron policy.

    ``sparsity`` in [0.1, 0.9] scales every fan-out; 40% of the non-motor
    neurons are command neurons, the rest inter neurons.
    """

    def __init__(self, units: int, outputs: int, sparsity: float = 0.5, seed: int = 22222) -> None:
        if outputs >= units - 2:
            raise ValueError(f"outputs must be less than units - 2 (got units={units}, outputs={outputs})")
        if not 0.1 <= sparsity <= 0.9:
            raise ValueError(f"sparsity must be in [0.1, 0.9], got {sparsity}")
        density = 1.0 - sparsity
        non_motor = units - outputs
        command = max(int(0.4 * non_motor), 1)
        inter = non_motor - command
        super().__init__(
            inter_neurons=inter,
            command_neurons=command,
            motor_neurons=outputs,
            sensory_fanout=max(int(inter * density), 1),
            inter_fanout=max(int(command * density), 1),
            recurrent_command_synapses=max(int(command * density * 2), 1),
            motor_fanin=max(int(command * density), 1),
            seed=seed,
        )
