"""The two demos, end to end with the real ``ns-train``: :mod:`.synthetic` (a synthetic head,
``ns-latentavatar-demo``) and :mod:`.video` (a real video, ``ns-latentavatar-demo-video``), over the
shared :mod:`.steps` (train, render a turntable and a held-out comparison, say where the results are).
"""
