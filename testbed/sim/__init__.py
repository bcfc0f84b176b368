"""The SimPy cluster model (see :mod:`testbed.sim.engine`)."""
from .engine import Simulation, SimResult

__all__ = ["Simulation", "SimResult"]
