"""On-disk formats, one module each: results paths (layout), manifests, activations and codes HDF5, atomic
writes, provenance."""
