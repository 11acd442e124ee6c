"""One record per method: network, targets, loss, post-processing, checkpoint, written once.

The course teaches four deep methods of instance segmentation. Each is a :class:`Method`
record in :data:`METHODS`; notebooks 03, 05 and 06 build every piece by hand and then assert
that theirs equals the record's, and notebook 07b, the model zoo, the tests and the benchmarks
use the records, so that no recipe is written twice:

==================  ================  ==================================  =====================
method              network           targets -> loss                     outputs -> instances
==================  ================  ==================================  =====================
``unet_weighted``   ``UNetOriginal``  foreground with gaps + weight map   connected components
                                      -> weighted cross-entropy
``unet_3class``     ``UNet``          background / interior / boundary    interior grown over
                                      -> cross-entropy                    the boundary
``cellpose``        ``CellposeNet``   5 x flows + cell mask               flow following
                                      -> MSE / 2 + BCE                    (``flows_to_masks``)
``stardist``        ``StarDistNet``   object probability + ray distances  polygon NMS
                                      -> BCE + weighted MAE               (``stardist_to_labels``)
==================  ================  ==================================  =====================

- ``records``: :class:`Method`, :data:`METHODS`, :func:`get`;
- ``loading``: :func:`load_model` rebuilds a network from a checkpoint alone (``train.fit``
  writes the network's class and arguments into it), :func:`read_meta`;
- ``training``: :func:`train_method`, the one training entry point (a fresh network, a
  pretrained one to fine-tune, or sparse labels), through the record;
- ``budgets``: :data:`BUDGETS`, every training budget of the course by name, and :func:`budget`;
- ``outputs``: each method's step from raw outputs to labels.

Introduced in notebook 03.
"""

from .budgets import BUDGETS as BUDGETS
from .budgets import Budget as Budget
from .budgets import budget as budget
from .evaluation import evaluate as evaluate
from .evaluation import outputs_of as outputs_of
from .evaluation import score as score
from .evaluation import tune_postprocess as tune_postprocess
from .loading import load_model as load_model
from .loading import load_notebook_model as load_notebook_model
from .loading import read_meta as read_meta
from .loading import save_model as save_model
from .outputs import init_stardist_distances as init_stardist_distances
from .records import METHODS as METHODS
from .records import NUCLEUS_METHODS as NUCLEUS_METHODS
from .records import Method as Method
from .records import get as get
from .training import checkpoint_folder as checkpoint_folder
from .training import freeze_parameters as freeze_parameters
from .training import train_method as train_method
