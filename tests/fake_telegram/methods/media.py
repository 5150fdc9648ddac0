"""Photos and documents: uploads (multipart) and resending by file_id; getFile."""

from __future__ import annotations

import io
import mimetypes
from typing import Any

from ..args import Upload
from ..errors import bad_request
from ..state import StoredFile, file_ids
from ..world import BotState
from . import Ctx, api_method
from .common import check_caption, formatted, markup, send, target, text_content

# Telegram keeps a photo in these bounding boxes (thumbnail "s" up to the largest "w").
_PHOTO_BOXES = (90, 320, 800, 1280, 2560)
_KIND_NAMES = {"photo": "Photo", "document": "Document"}


def _register(bot: BotState, stored: StoredFile, folder: str, extension: str) -> StoredFile:
    stored.file_path = f"{folder}/file_{len(bot.files)}{extension}"
    bot.files[stored.file_id] = stored
    return stored


def _store_photo(bot: BotState, upload: Upload) -> list[StoredFile]:
    if not upload.data:
        raise bad_request("file must be non-empty")
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(upload.data)) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError):
        raise bad_request("IMAGE_PROCESS_FAILED") from None
    sizes: list[StoredFile] = []
    for box in _PHOTO_BOXES:
        scale = min(1.0, box / max(width, height))
        file_id, unique_id = file_ids()
        stored = StoredFile(
            file_id,
            unique_id,
            "photo",
            upload.data,
            width=max(1, round(width * scale)),
            height=max(1, round(height * scale)),
            # Telegram re-encodes every size; the estimate keeps file_size plausible.
            size=max(1, round(len(upload.data) * scale * scale)),
            sizes=sizes,
        )
        sizes.append(_register(bot, stored, "photos", ".jpg"))
        if scale == 1.0:
            break
    return sizes


def _store_document(bot: BotState, upload: Upload) -> StoredFile:
    if not upload.data:
        raise bad_request("file must be non-empty")
    mime_type = mimetypes.guess_type(upload.filename)[0]
    if mime_type is None:
        mime_type = upload.content_type or "application/octet-stream"
    file_id, unique_id = file_ids()
    stored = StoredFile(
        file_id,
        unique_id,
        "document",
        upload.data,
        file_name=upload.filename,
        mime_type=mime_type,
        size=len(upload.data),
    )
    extension = "." + upload.filename.rsplit(".", 1)[-1] if "." in upload.filename else ""
    return _register(bot, stored, "documents", extension)


def _known_file(bot: BotState, file_id: str, kind: str) -> StoredFile:
    if file_id.startswith(("http://", "https://")):
        raise bad_request("Failed to get HTTP URL content")  # the fake fetches no URLs
    stored = bot.files.get(file_id)
    if stored is None:
        raise bad_request("wrong file identifier/HTTP URL specified")
    if stored.kind != kind:
        raise bad_request(
            f"can't use file of type {_KIND_NAMES[stored.kind]} as {_KIND_NAMES[kind]}"
        )
    return stored


def _input_file(ctx: Ctx, field: str) -> tuple[str, Upload | None]:
    value = ctx.args.text(field)
    upload = ctx.args.upload(value, field)
    if upload is None and (not value or value.startswith("attach://")):
        raise bad_request(f"There is no {field} in the request")
    return value, upload


def _caption(ctx: Ctx) -> dict[str, Any]:
    plain, entities = formatted(ctx, ctx.args.text("caption"), "caption_entities")
    check_caption(plain)
    return text_content(plain, entities, caption=True)


@api_method("sendPhoto")
def send_photo(ctx: Ctx) -> dict[str, Any]:
    value, upload = _input_file(ctx, "photo")
    caption = _caption(ctx)
    reply_markup = markup(ctx)
    where = target(ctx)
    if upload is not None:
        sizes = _store_photo(ctx.bot, upload)
    else:
        sizes = _known_file(ctx.bot, value, "photo").sizes
    content = {"photo": [size.json() for size in sizes], **caption}
    message = send(
        ctx,
        where,
        content,
        reply_markup,
        parse_mode=ctx.args.text("parse_mode") or None,
        photo=sizes[-1].data,
    )
    return message.json()


@api_method("sendDocument")
def send_document(ctx: Ctx) -> dict[str, Any]:
    value, upload = _input_file(ctx, "document")
    caption = _caption(ctx)
    reply_markup = markup(ctx)
    where = target(ctx)
    if upload is not None:
        stored = _store_document(ctx.bot, upload)
    else:
        stored = _known_file(ctx.bot, value, "document")
    document: dict[str, Any] = {}
    if stored.file_name:
        document["file_name"] = stored.file_name
    if stored.mime_type:
        document["mime_type"] = stored.mime_type
    document.update(stored.json())
    message = send(
        ctx,
        where,
        {"document": document, **caption},
        reply_markup,
        parse_mode=ctx.args.text("parse_mode") or None,
        document={
            "file_name": stored.file_name,
            "mime_type": stored.mime_type,
            "data": stored.data,
        },
    )
    return message.json()


@api_method("getFile")
def get_file(ctx: Ctx) -> dict[str, Any]:
    stored = ctx.bot.files.get(ctx.args.text("file_id"))
    if stored is None:
        raise bad_request("wrong file_id or the file is temporarily unavailable")
    body: dict[str, Any] = {"file_id": stored.file_id, "file_unique_id": stored.file_unique_id}
    if stored.size:
        body["file_size"] = stored.size
    body["file_path"] = stored.file_path
    return body
