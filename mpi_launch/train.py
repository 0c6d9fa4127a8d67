"""mpirun -n N python mpi_launch/train.py <the flags of npdlrm train>

Thin on purpose: the flags, the distributed run and the failure handling live in
npdlrm.parallel (see npdlrm/parallel/launch.py).
"""
from npdlrm.parallel.launch import main

if __name__ == "__main__":
    raise SystemExit(main())
