"""postprocess (see the modules inside)."""

from .flows import flows_to_masks as flows_to_masks
from .flows import follow_flows as follow_flows
from .nms import non_maximum_suppression as non_maximum_suppression
from .polygons import dist_to_coord as dist_to_coord
from .polygons import polygons_to_label as polygons_to_label
