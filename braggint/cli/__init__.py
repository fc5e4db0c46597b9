"""The command-line programs (``braggint.integrate``, ``braggint.predict``, ...).

The commands run OpenBLAS single-threaded (``OPENBLAS_NUM_THREADS=1``
unless it is set; set here, before numpy loads OpenBLAS, and inherited by
the local workers).  Their linear algebra is on 3 x 3 matrices and n x 3
arrays, which one thread does as fast, and OpenBLAS's threads otherwise
spin after every call waiting for more: 0.25-0.35 s of CPU in the
command's process before the first block on two workers, taken from the
workers starting beside it (sweep400 on two workers: time to the first
block 2.19-2.49 -> 1.91-2.63 s, wall 4.9-5.7 -> 4.4-5.35 s, 5 alternating
runs).  Block tasks keep BLAS single-threaded too
(:func:`braggint.pipeline.block_tasks.one_core`).
"""

import os

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
