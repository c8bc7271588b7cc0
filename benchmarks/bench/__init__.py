"""The parts of `benchmarks/run.py`, one module each (see its docstring); `run.py` is the command line."""
