"""LatentAvatar for nerfstudio.

Layers, each a folder: ``assets`` (model weights and media, fetched into a cache), ``data`` (the
dataset format, parser, dataset and datamanager), ``synthetic`` (procedural heads with exact ground
truth), ``model`` (encoder, generator, field, samplers, renderer, super-resolution, code table),
``method`` (the nerfstudio wiring: configs, pipeline, trainer, viewer panel), ``process`` (video to
dataset), ``reenact`` (the second stage), ``render`` (novel-view videos of a trained avatar), ``demo``
(the two end-to-end demos), ``evaluation`` (scores), ``utils`` and ``scripts`` (one thin entry point per
command).
"""

import importlib
import importlib.abc
import importlib.util
import sys

_MOVED = {
    "latentavatar_ns.configs": "latentavatar_ns.method.configs",
    "latentavatar_ns.pipeline": "latentavatar_ns.method.pipeline",
    "latentavatar_ns.trainer": "latentavatar_ns.method.trainer",
    "latentavatar_ns.viewer_panel": "latentavatar_ns.method.viewer_panel",
}
"""Modules that moved, by their old path. A trained avatar's config.yml names its classes by module path,
so avatars saved before the move import the old path; it resolves to the module's new home."""


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Imports an old path as the module at its new path (one module object, registered under both names)."""

    def __init__(self):
        self._specs = {}

    def find_spec(self, name, path=None, target=None):
        return importlib.util.spec_from_loader(name, self) if name in _MOVED else None

    def create_module(self, spec):
        module = importlib.import_module(_MOVED[spec.name])
        self._specs[spec.name] = module.__spec__
        return module

    def exec_module(self, module):
        module.__spec__ = self._specs.pop(module.__spec__.name)  # the import system set the old path's spec


sys.meta_path.append(_MovedModuleFinder())
