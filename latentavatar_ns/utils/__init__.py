"""Helpers shared by the commands: checkpoints, atomic writes, images and video, cameras, metrics, errors.

Nothing is imported here, so that importing one helper stays as cheap as that helper.
"""
