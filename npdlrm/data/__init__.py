"""Data: synthetic generators, Criteo preprocessing into HDF5, the batch loader."""
