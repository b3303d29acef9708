"""What every facet of the image task reads: the spec's configuration (set by
``ImageRestoration.__init__``) and its image store."""

from __future__ import annotations

from typing import Any

from flywheel.errors import FlywheelError
from flywheel.images import ImageLimits
from flywheel.tasks.base import TaskSpec


class ImageFields(TaskSpec):
    """The image task's state, shared by its facets."""

    store: Any  # flywheel.images' image store, or None for a spec built without settings
    limits: ImageLimits
    net: Any  # flywheel.tasks.image.network.RestorationNetConfig
    patch: int

    def _store(self):
        if self.store is None:
            raise FlywheelError(
                "this image-restoration spec has no image store; build it with spec_for(settings)"
            )
        return self.store
