"""The one CPU/GPU dispatch point: pick the array module from where arrays live."""
import numpy as np


def get_array_module(*arrays):
    """numpy, or cupy when any argument is a CuPy array (CuPy is optional)."""
    for a in arrays:
        if type(a).__module__.split(".")[0] == "cupy":
            import cupy
            return cupy
    return np
