"""Helpers that several modules of ``course_utils`` share, each in one named place.

Like scikit-image's ``_shared``: a module that needs one of these imports it from here, never
from whichever sibling happened to define it first. Nothing here is part of the course's public
API; every function is still documented and tested (``tests/test_shared.py``,
``tests/test_validate.py``).

- ``validate``: input checks (integers, reals, images, labels, tensors, finite values, grids).
- ``device``: the one device resolver (``COURSE_DEVICE``), a model's device, the AMP dtype.
- ``jit``: numba, set up once (threading layer) for the compiled kernels.
- ``relabel``: consecutive ids for label images with sparse or huge ids, and back.
"""
