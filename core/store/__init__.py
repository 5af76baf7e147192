"""What advx keeps on disk: adversarial sets (HDF5: format, writer, obtaining a set, its
identity and seeds, listing), trained weights (HDF5, never unpickled), the cache root, locks,
and the one atomic-write helper every file goes through."""
