"""braggint: integration of X-ray rotation diffraction data.

braggint reads the same inputs as DIALS's ``dials.integrate`` (a DIALS
experiment list and a msgpack reflection table of indexed strong spots) and
writes the same outputs.  Subpackages:

``models``   experiment models (beam, detector, goniometer, scan, crystal,
             profile, image set) and the reflection table.
``io``       readers and writers of ``.expt``, ``.refl`` and image files.
``params``   the PHIL parameter language and the dials.integrate parameter tree.
``cli``      command-line programs (``braggint.integrate``, ``braggint.show``).
``tasks``    pure numerical kernels (no Dask, no I/O).
``pipeline`` task-graph building and orchestration.

Importing the package points numba's kernel cache at this copy's own
directory, emptied whenever its sources change (:mod:`braggint.kernel_cache`).
"""

from .kernel_cache import use_kernel_cache

__version__ = "0.2.0"

use_kernel_cache()
