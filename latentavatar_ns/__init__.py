"""LatentAvatar for nerfstudio."""
