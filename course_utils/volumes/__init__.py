"""volumes: segmentation of (Z, Y, X) stacks (notebook 11).

- ``targets``: 3-D training targets (three classes; StarDist-3D's probability and distances;
  Cellpose's flows and cell probability);
- ``patches``: ``VolumePatches``, random augmented 3-D crops with their targets;
- ``predict``: ``predict_volume`` (tiled), ``classes_to_labels_3d``, ``stardist3d_to_labels``;
- ``baseline``: ``watershed_3d``, a classical baseline that honours the voxel size;
- ``methods``: the 3-D records ``unet3d``, ``stardist3d`` and ``cellpose3d``
  (:data:`VOLUME_METHODS`), trained through ``methods.train_method``
  (``training.train_volume_method``).

The networks are ``models.UNet3D`` and ``models.StarDist3DNet``; the 3-D post-processing is in
``postprocess`` (``non_maximum_suppression_3d``, ``polyhedra_to_label``, ``flows_to_masks_3d``,
``stitch_planes``) and the flows in ``targets.flows_3d``; data in ``data.load_volumes``.
"""

from . import pretrained as pretrained
from .baseline import watershed_3d as watershed_3d
from .methods import VOLUME_METHODS as VOLUME_METHODS
from .methods import VolumeMethod as VolumeMethod
from .methods import get_volume_method as get_volume_method
from .patches import VolumePatches as VolumePatches
from .planes import cellpose_three_views as cellpose_three_views
from .planes import plane_outputs as plane_outputs
from .planes import segment_planes as segment_planes
from .predict import classes_to_labels_3d as classes_to_labels_3d
from .predict import predict_volume as predict_volume
from .predict import stardist3d_to_labels as stardist3d_to_labels
from .targets import boundary_classes_3d as boundary_classes_3d
from .targets import cellpose3d_targets as cellpose3d_targets
from .targets import edt_prob_3d as edt_prob_3d
from .targets import stardist3d_targets as stardist3d_targets
from .training import train_volume_method as train_volume_method
