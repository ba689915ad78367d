"""Whole-volume inference: `infer_volume` streams a volume on disk through a net, block by block."""

from znnx.volume.devices import Placement, device_nets
from znnx.volume.infer import infer_volume
from znnx.volume.runner import Summary, VolumeOptions, plan_blocks

__all__ = ["Placement", "Summary", "VolumeOptions", "device_nets", "infer_volume", "plan_blocks"]
