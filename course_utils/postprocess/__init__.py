"""postprocess: network outputs -> instance labels (see the modules inside)."""

from .flows import flows_to_masks as flows_to_masks
from .flows import follow_flows as follow_flows
from .flows3d import flows_to_masks_3d as flows_to_masks_3d
from .flows3d import stitch_planes as stitch_planes
from .grouping import affinities_to_labels as affinities_to_labels
from .grouping import affinity_components as affinity_components
from .instances import classes_to_labels as classes_to_labels
from .instances import foreground_to_labels as foreground_to_labels
from .instances import stardist_to_labels as stardist_to_labels
from .nms import non_maximum_suppression as non_maximum_suppression
from .polygons import dist_to_coord as dist_to_coord
from .polygons import polygons_to_label as polygons_to_label
from .polyhedra import non_maximum_suppression_3d as non_maximum_suppression_3d
from .polyhedra import polyhedra_to_label as polyhedra_to_label
from .polyhedra import ray_faces as ray_faces
