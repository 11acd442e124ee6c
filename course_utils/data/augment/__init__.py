"""Augmentations that move an image and its instance labels together.

Every augmentation has the signature that ``PatchDataset(..., augment=...)`` takes::

    augment(image, labels, rng) -> (image, labels)

``image`` float ``(H, W)`` or ``(C, H, W)`` (returned float32 in the same layout), ``labels``
integer ``(H, W)`` (returned int32 when every id fits, otherwise int64: ids are never wrapped;
ids above ``2**63 - 1`` are refused), ``rng`` a ``numpy.random.Generator``, the only source of
randomness. The factories (``random_rotation(max_angle=30)``, ...) return such callables and
``compose`` chains them. Three rules keep the labels right:

- a geometric transform computes one sampling grid and applies it to both arrays (``remap``);
- labels are resampled by nearest neighbour only, since interpolated ids are invented ids;
- intensity transforms (``intensity``, ``gaussian_noise``, ``gaussian_blur``) leave labels alone.

Borders (``mode``): ``"constant"`` fills the image with ``cval`` and the labels with 0
(background). ``"reflect"`` mirrors both about the edge pixel (numpy's ``"reflect"``, scipy's
``"mirror"``). A mirrored nucleus is another object, so each mirrored copy of the image gets its
own ids ``id + k * max_id`` (``k >= 1`` numbers the copies, as ``PatchDataset`` does when it
pads); ``(new_id - 1) % max_id + 1`` is the original id. These ids are computed in int64; a
transform whose copies would need ids above ``2**63 - 1`` raises ``ValueError``.

Sparse labels (``course_utils.sparse``: -1 = unknown, 0 = annotated background) are refused by
these transforms, as any negative id is; ``with_unknown(augment)`` runs any of them on sparse
labels, keeping -1 unknown (never an id, never interpolated, and unknown beyond the border).

Introduced in notebook 04.
"""

from .core import compose as compose
from .core import flip_rot90 as flip_rot90
from .geometric import elastic as elastic
from .geometric import elastic_deform as elastic_deform
from .geometric import elastic_displacement as elastic_displacement
from .geometric import elastic_grid as elastic_grid
from .geometric import grid_displacement as grid_displacement
from .geometric import random_affine as random_affine
from .geometric import random_rotation as random_rotation
from .geometric import remap as remap
from .intensity import gaussian_blur as gaussian_blur
from .intensity import gaussian_noise as gaussian_noise
from .intensity import intensity as intensity
from .unknown import UNKNOWN as UNKNOWN
from .unknown import with_unknown as with_unknown

__all__ = [
    "UNKNOWN",
    "compose",
    "elastic",
    "elastic_deform",
    "elastic_displacement",
    "elastic_grid",
    "flip_rot90",
    "gaussian_blur",
    "gaussian_noise",
    "grid_displacement",
    "intensity",
    "random_affine",
    "random_rotation",
    "remap",
    "with_unknown",
]
