"""Data-parallel training over MPI ranks: the one place charrnn talks to MPI (mpi4py, the `mpi` extra).

`world.py` sees whether this process was started by an MPI launcher (from the environment alone: nothing of
MPI is imported otherwise) and wraps the communicator in the few collectives training needs. The training
side (which rank owns which streams, what is reduced when) is training/ranks.py.
"""
