"""targets: instance labels -> training targets (see the modules inside).

Each method's training targets are one function here: ``unet_2class_targets``,
``unet_3class_targets``, ``cellpose_targets``, ``stardist_targets``, ``affinity_targets``.
"""

from .affinities import AFFINITY_OFFSETS as AFFINITY_OFFSETS
from .affinities import affinity_targets as affinity_targets
from .affinities import affinity_valid as affinity_valid
from .affinities import label_affinities as label_affinities
from .flows import FLOW_SCALE as FLOW_SCALE
from .flows import cellpose_targets as cellpose_targets
from .flows import masks_to_flows as masks_to_flows
from .flows import unit_flows as unit_flows
from .flows3d import flows_3d as flows_3d
from .stardist import edt_prob as edt_prob
from .stardist import ray_angles as ray_angles
from .stardist import star_dist as star_dist
from .stardist import stardist_targets as stardist_targets
from .stardist3d import rays_golden_spiral as rays_golden_spiral
from .stardist3d import star_distances_3d as star_distances_3d
from .stardist3d import star_distances_3d_at as star_distances_3d_at
from .weights import boundary_classes as boundary_classes
from .weights import unet_2class_targets as unet_2class_targets
from .weights import unet_3class_targets as unet_3class_targets
from .weights import unet_weight_map as unet_weight_map
from .weights import with_gaps as with_gaps
