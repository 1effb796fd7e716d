"""Images: Docker and OCI images imported into a content-addressed layer store.

``import_image`` reads a ``docker save`` tarball or an OCI image layout,
verifies every blob, and unpacks each layer once into the ``Store``; a
container whose ``ContainerSpec.image`` names an image gets an overlayfs root
of its layers (``Store.overlay_root``, mounted by ``isolation.mounts``).
See docs/images.md.
"""

from sandboxd.images._import import Progress, import_image
from sandboxd.images._model import (
    DEFAULT_STORE,
    Image,
    ImageConfig,
    ImageError,
    ImportLimits,
    LayerInfo,
    parse_name,
)
from sandboxd.images._store import Removal, Store, mounted_images

__all__ = [
    "DEFAULT_STORE",
    "Image",
    "ImageConfig",
    "ImageError",
    "ImportLimits",
    "LayerInfo",
    "Progress",
    "Removal",
    "Store",
    "import_image",
    "mounted_images",
    "parse_name",
]
