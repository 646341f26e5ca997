"""Driving an avatar with ARKit blendshapes: their names, Live Link Face recordings, and the mapping
from a frame's blendshapes to the avatar's own expression code."""
