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
"""

__version__ = "0.2.0"
