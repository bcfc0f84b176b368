"""testbed: a research testbed for Ray-style distributed runtimes.

``import testbed`` is cheap: it starts no process and imports no SimPy machinery.
The simulator lives in :mod:`testbed.sim`, the shared policy layer in
:mod:`testbed.policy`, the experiment runner in :mod:`testbed.studies`.
"""

__version__ = "0.1.0"
