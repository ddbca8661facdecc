"""Export to open formats: asciicast v2 (asciinema) and JSON lines.

The recording keeps raw bytes; only exports decode them. Output and input are
decoded with incremental UTF-8 decoders, so a character split across events or
chunks comes out whole; invalid bytes become U+FFFD in the asciicast export only.
JSON lines stay lossless: bytes that are not valid UTF-8 are given as base64.
"""

from __future__ import annotations

import base64
import codecs
import json
from collections.abc import Iterable
from typing import Any, TextIO

from recorder.events import Event, Exit, Input, Marker, Output, Resize, Structured
from recorder.reader import RecordingReader

__all__ = ["event_to_json", "to_asciicast", "to_jsonl"]


def _line(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(", ", ": ")) + "\n"


def _terminal_size(reader: RecordingReader) -> tuple[int, int]:
    cols, rows = reader.header.meta_int("cols"), reader.header.meta_int("rows")
    if cols and rows:
        return cols, rows
    for event in reader.events():
        if isinstance(event, Resize):
            return event.cols, event.rows
        if isinstance(event, Output):
            break
    return 80, 24


def to_asciicast(reader: RecordingReader, out: TextIO, *, include_input: bool = True) -> int:
    """Write the recording as asciicast v2 to ``out``; return the number of events.

    Width/height come from header ``meta`` ``cols``/``rows``, else the first resize
    before any output, else 80x24. Exit and structured events have no asciicast
    form and are left out; markers become ``"m"`` and resizes ``"r"`` events.
    """
    header = reader.header
    cols, rows = _terminal_size(reader)
    env = {"TERM": header.meta_str("term") or "xterm-256color"}
    shell = header.meta_str("shell")
    if shell:
        env["SHELL"] = shell
    title = " ".join(
        s for s in (header.meta_str("user"), header.meta_str("target"), header.session_id) if s
    )
    out.write(
        _line(
            {
                "version": 2,
                "width": cols,
                "height": rows,
                "timestamp": int(header.started_at),
                "env": env,
                "title": title,
            }
        )
    )
    decoders = {
        "o": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        "i": codecs.getincrementaldecoder("utf-8")(errors="replace"),
    }
    count = 0
    last = 0.0
    for event in reader.events():
        last = event.time
        code: str | None = None
        text = ""
        if isinstance(event, Output):
            code, text = "o", decoders["o"].decode(event.data)
        elif isinstance(event, Input) and include_input:
            code, text = "i", decoders["i"].decode(event.data)
        elif isinstance(event, Resize):
            code, text = "r", f"{event.cols}x{event.rows}"
        elif isinstance(event, Marker):
            code, text = "m", event.label
        if code is None or (code in "oi" and not text):
            continue
        out.write(_line([round(event.time, 6), code, text]))
        count += 1
    for code, decoder in decoders.items():
        rest = decoder.decode(b"", final=True)
        if rest:
            out.write(_line([round(last, 6), code, rest]))
            count += 1
    return count


def _bytes_fields(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def event_to_json(event: Event) -> dict[str, Any]:
    """One event as a JSON-able dict: ``t``, ``kind`` and the kind's fields.

    Output/input carry ``text`` when the bytes are valid UTF-8, else ``b64``.
    """
    obj: dict[str, Any] = {"t": round(event.time, 6), "kind": event.kind.name.lower()}
    if isinstance(event, Output | Input):
        obj.update(_bytes_fields(event.data))
    elif isinstance(event, Resize):
        obj.update(cols=event.cols, rows=event.rows)
    elif isinstance(event, Marker):
        obj["label"] = event.label
    elif isinstance(event, Exit):
        obj.update(status=event.status, signal=event.signal)
    elif isinstance(event, Structured):
        obj.update(name=event.name, payload=event.payload)
    return obj


def to_jsonl(reader: RecordingReader, out: TextIO, *, events: Iterable[Event] | None = None) -> int:
    """Write a header object then every event as one JSON object per line.

    Returns the number of event lines. ``events`` overrides ``reader.events()``
    (e.g. a time range).
    """
    header = reader.header
    out.write(
        json.dumps(
            {
                "kind": "header",
                "format": header.version,
                "session_id": header.session_id,
                "started_at": header.started_at,
                "key_id": header.key_id,
                "meta": dict(header.meta),
            },
            ensure_ascii=False,
        )
        + "\n"
    )
    count = 0
    for event in reader.events() if events is None else events:
        out.write(json.dumps(event_to_json(event), ensure_ascii=False) + "\n")
        count += 1
    return count
