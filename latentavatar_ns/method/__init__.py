"""The nerfstudio wiring: method configs (``ns-train latentavatar``), pipeline, trainer and the viewer's
expression panel."""
