"""The guidance package's data files: a user's file, or the default packaged with Cuecard."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

from guidance.errors import GuidanceError


def read_data_file(
    path: str | Path | None, packaged: str, what: str, error: type[GuidanceError]
) -> tuple[str, str]:
    """The text of ``path``, or of the packaged ``guidance/<packaged>`` when ``path`` is None,
    and the file's name for messages. An unreadable file raises ``error`` naming ``what``."""
    if path is None:
        text = importlib.resources.files("guidance").joinpath(packaged).read_text("utf-8")
        return text, f"guidance/{packaged} (packaged default)"
    try:
        return Path(path).read_text(encoding="utf-8"), str(path)
    except OSError as e:
        raise error(f"{what} {path}: cannot read the file: {e.strerror}") from e
