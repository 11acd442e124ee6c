"""targets (see the modules inside)."""

from .flows import FLOW_SCALE as FLOW_SCALE
from .flows import masks_to_flows as masks_to_flows
from .weights import boundary_classes as boundary_classes
from .weights import unet_weight_map as unet_weight_map
