"""models (see the modules inside)."""

from .cellpose import CellposeNet as CellposeNet
from .maskrcnn import MaskRCNNNet as MaskRCNNNet
from .receptive_field import receptive_field as receptive_field
from .registry import NETWORKS as NETWORKS
from .registry import build_network as build_network
from .registry import network_config as network_config
from .stardist import StarDistNet as StarDistNet
from .unet import UNet as UNet
from .unet import UNetOriginal as UNetOriginal
from .unet import center_crop as center_crop
from .unet import count_parameters as count_parameters
from .unet import unet_output_size as unet_output_size
from .unet import valid_input_sizes as valid_input_sizes
from .unet3d import StarDist3DNet as StarDist3DNet
from .unet3d import UNet3D as UNet3D
from .unet3d import memory_per_sample as memory_per_sample
from .unet3d import pooling_plan as pooling_plan
