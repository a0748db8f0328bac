"""Request and response schemas of the HTTP API (pydantic), and its OpenAPI extras."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from ..imageio import ALLOWED_FORMATS, MAX_PIXELS

MAX_BODY_BYTES = 10 * 1024 * 1024


class ErrorOut(BaseModel):
    detail: str = Field(description="what went wrong, in one line")
    kind: str = Field(description="machine-readable reason: too_large, unsupported, bad_shape, corrupt, empty, "
                                  "recognition, unknown_model, no_file, bad_request, timeout, overloaded, "
                                  "host_not_allowed, origin_not_allowed, internal")


# a face as the API answers it: ``inference.records.api_face`` (the face record shared with predict, video and
# batch; values rounded as in ``ferlab predict --json``)
class FaceOut(BaseModel):
    box: list[int] = Field(description="x, y, width, height in pixels of the uploaded image")
    label: str = Field(description="most probable expression")
    confidence: float = Field(description="probability of the label (calibrated with the card's temperature)")
    probabilities: dict[str, float] = Field(description="probability of every class of the model")
    whole_image: bool = Field(description="true when no face was found and the whole image was classified")
    track_id: int | None = Field(None, description="stable id of a face across frames (stream only)")
    keypoints: list[list[float]] | None = Field(None, description="six (x, y) points from the BlazeFace detector: "
                                                                  "right eye, left eye, nose tip, mouth centre, "
                                                                  "right and left ear tragion")


class PredictOut(BaseModel):
    model: str = Field(description="name of the model that answered")
    faces: list[FaceOut]
    width: int = Field(description="image width in pixels (after EXIF rotation)")
    height: int
    ms: float = Field(description="server time spent decoding and recognising, milliseconds")
    no_face: bool = Field(False, description="true when the detector found no face: `faces` is empty (no face, no "
                                             "label), or with on_no_face=whole holds the whole image")
    detector: str | None = Field(None, description="the face detector that ran")
    search: str | None = Field(None, description="the photo search that ran (fast, balanced or thorough; the default "
                                                 "detector only)")


class ModelOut(BaseModel):
    model_config = ConfigDict(extra="allow")
    name: str
    classes: list[str]
    input_size: int
    default: bool = False


class ModelsOut(BaseModel):
    default: str
    models: list[ModelOut]


class HealthOut(BaseModel):
    status: str
    version: str
    models: list[str]


def _err(description: str) -> dict:
    return {"model": ErrorOut, "description": description}


PREDICT_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: _err("empty, truncated or malformed image, or a malformed request body"),
    404: _err("unknown model name (see GET /v1/models)"),
    413: _err(f"request body over the size limit ({MAX_BODY_BYTES // 2**20} MB by default), or an image over "
              f"{MAX_PIXELS / 1e6:.0f} megapixels (refused from its header, before decoding)"),
    415: _err("not an image, or an image format outside the allow-list "
              f"({', '.join(sorted(ALLOWED_FORMATS))})"),
    403: _err("a browser request from another web site (Origin not this server's nor an allowed one)"),
    408: _err("the request body did not arrive within the body timeout"),
    421: _err("Host header not one this server answers to (DNS-rebinding protection)"),
    422: _err("multipart body without a 'file' field, an image shaped like a strip, or an image the "
              "detector or classifier cannot process"),
    500: _err("unexpected server error (the server keeps running)"),
    503: _err("too many requests in progress: retry after the number of seconds in Retry-After"),
}
_BINARY = {"schema": {"type": "string", "format": "binary"}}
PREDICT_OPENAPI = {
    "requestBody": {
        "required": True,
        "description": "The image, either as the multipart field `file` (with an optional `model` field) or "
                       "as the raw request body with an image content type. Only the uploaded bytes are used.",
        "content": {
            "multipart/form-data": {"schema": {
                "type": "object", "required": ["file"],
                "properties": {"file": {"type": "string", "format": "binary", "description": "the image"},
                               "model": {"type": "string", "description": "model name (overrides ?model=)"}}}},
            **{t: _BINARY for t in ("image/jpeg", "image/png", "image/webp", "image/bmp", "image/gif",
                                    "image/tiff", "image/x-portable-pixmap", "application/octet-stream")},
        },
    }
}
