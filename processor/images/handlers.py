"""The built-in handlers: POST /process-image, /process-complete-pack, /process-aplus."""

from __future__ import annotations

from starlette.routing import Route

from processor.images.aplus import process_aplus
from processor.images.common import endpoint
from processor.images.image import process_image
from processor.images.pack import process_pack

routes = [
    Route("/process-image", endpoint(process_image), methods=["POST"]),
    Route("/process-complete-pack", endpoint(process_pack), methods=["POST"]),
    Route("/process-aplus", endpoint(process_aplus), methods=["POST"]),
]
