"""targets (see the modules inside)."""

from .flows import FLOW_SCALE as FLOW_SCALE
from .flows import masks_to_flows as masks_to_flows
from .stardist import edt_prob as edt_prob
from .stardist import fibonacci_rays as fibonacci_rays
from .stardist import ray_angles as ray_angles
from .stardist import star_dist as star_dist
from .stardist import star_dist_3d as star_dist_3d
from .weights import boundary_classes as boundary_classes
from .weights import unet_weight_map as unet_weight_map
