"""Learning from sparse annotations: a few objects outlined, some background marked, the rest
unknown (notebook 09, after Sugawara 2023).

Sparse labels are int32 ``(H, W)`` images with three kinds of pixels:

==========  ==========================================================================
``-1``      unknown (:data:`UNKNOWN`): not annotated, may be a nucleus or background
``0``       annotated background
``id > 0``  an annotated object, always whole (every pixel of it carries its id)
==========  ==========================================================================

The two changes that let a Cellpose- or StarDist-style network learn from them: tell the
unknown pixels from the annotated ones, and leave the unknown ones (and the target pixels that
depend on them) out of the loss.

- ``annotate``: :func:`sparsify` makes sparse labels from dense ones (k objects or a fraction,
  random / dimmest / brightest / both, background in a band, everywhere or nowhere);
- ``targets``: each method's targets and masks of the pixels whose target is trusted
  (:func:`cellpose_sparse_targets`, :func:`stardist_sparse_targets`,
  :func:`unet_3class_sparse_targets`, :func:`next_to_unknown`);
- ``losses``: the records' losses over the trusted pixels (:func:`cellpose_sparse_loss`,
  :func:`stardist_sparse_loss`, :func:`unet_3class_sparse_loss`); with a full annotation
  each equals the dense loss;
- ``training``: :data:`SPARSE` (the sparse targets and loss of each record, by method name),
  :func:`recipe`, :func:`train_sparse` (a record's network trained on sparse labels).

``course_utils.data.PatchDataset(..., unknown=True)`` and ``augment.with_unknown`` carry -1
through crops and augmentations.

Introduced in notebook 09.
"""

from .annotate import BACKGROUNDS as BACKGROUNDS
from .annotate import SELECTIONS as SELECTIONS
from .annotate import UNKNOWN as UNKNOWN
from .annotate import sparsify as sparsify
from .losses import cellpose_sparse_loss as cellpose_sparse_loss
from .losses import stardist_sparse_loss as stardist_sparse_loss
from .losses import unet_3class_sparse_loss as unet_3class_sparse_loss
from .targets import cellpose_sparse_targets as cellpose_sparse_targets
from .targets import next_to_unknown as next_to_unknown
from .targets import stardist_sparse_targets as stardist_sparse_targets
from .targets import unet_3class_sparse_targets as unet_3class_sparse_targets
from .training import SPARSE as SPARSE
from .training import SparseRecipe as SparseRecipe
from .training import recipe as recipe
from .training import train_sparse as train_sparse
