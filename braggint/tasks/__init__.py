"""Pure numerical kernels: numpy in, numpy out; no Dask, no file I/O."""
