"""Videos of a trained avatar: :mod:`.novel_views` (turntable and spiral paths around the head).

The command is ``ns-latentavatar-render`` (:mod:`latentavatar_ns.scripts.render`).
"""
