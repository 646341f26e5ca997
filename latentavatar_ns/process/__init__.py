"""From a real video (or a folder of images) to a latentavatar dataset: ``ns-latentavatar-process``.

decode (frames) -> face (landmarks, template) -> geometry (pose, smoothing, crop, intrinsics)
-> matte (segmentation clipped to the canonical box) -> writer (dataset, summary, contact sheet).
Heavy imports (mediapipe, cv2) happen inside the modules, never at package import.
"""
