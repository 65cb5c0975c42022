"""The work folder of a preparation: what each piece gave, one small file per source item.

``midilm prepare`` first turns every item into a *record* (accepted with its sequences, or
rejected with a reason), then assembles the records into the dataset. Records are what make
preparation resumable and shardable: each is written atomically under a name derived from
the item and the settings, so a killed run finds what it already did, a second run finds
everything done, and records made on other machines (``--shard K/N``) can be joined
(``--merge``). Layout of a work folder (``DATASET/.work``, or a part folder)::

    part.json          the settings, the sources, this part's K/N, how many items
    items.jsonl        every item of the whole corpus in order: {"item": …, "key": …}
                       (the key is null for items that another part owns)
    records/a/<key>.rec

Records are spread over 16 folders by the first hex digit of their key, so that no folder
holds more than a sixteenth of a large corpus, while removing the folder stays quick (on
a file system mounted with ``discard`` each removed folder costs milliseconds).

A record file is ``MAGIC``, the length of a JSON header (8 bytes, little-endian), the
header, then the raw little-endian arrays the header lists (``"arrays": [[name, dtype,
count], …]``), back to back. No pickle: parts may come from other machines.

Records are not fsync'ed (hundreds of thousands of small files would take minutes more):
a record damaged by a power cut is detected (its length does not match its header) and
made again.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from midilm.data.shards import DatasetError

__all__ = [
    "ITEMS_FILE",
    "PART_FILE",
    "PART_FORMAT",
    "PART_FORMAT_VERSION",
    "RECORDS_DIR",
    "Record",
    "item_key",
    "iter_items",
    "read_record",
    "record_is_valid",
    "record_path",
    "write_json_atomic",
    "write_record",
]

MAGIC = b"MIDILM-RECORD-1\n"
PART_FORMAT = "midilm-prepare-part"
PART_FORMAT_VERSION = 2  # 2: records in 16 folders (1: 256)
PART_FILE = "part.json"
ITEMS_FILE = "items.jsonl"
RECORDS_DIR = "records"
_LENGTH_BYTES = 8


@dataclass
class Record:
    """What one item gave: ``header`` (status, reason or piece facts, counts) and arrays."""

    header: dict[str, Any]
    arrays: dict[str, np.ndarray]


def item_key(settings_key: str, item: str, fingerprint: str) -> str:
    """The record name of an item under some settings: changes when the settings, the item
    or the file (size, modification time) change."""
    text = json.dumps([settings_key, item, fingerprint], ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()


def record_path(work: Path, key: str) -> Path:
    return work / RECORDS_DIR / key[:1] / f"{key}.rec"


def write_record(path: Path, header: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> None:
    """Write a record atomically (a temporary file renamed into place)."""
    blobs = []
    listing = []
    for name, array in arrays.items():
        dtype = np.dtype(array.dtype).newbyteorder("<")
        data = np.ascontiguousarray(array, dtype=dtype).ravel()
        listing.append([name, dtype.str, int(data.size)])
        blobs.append(data.tobytes())
    full = {**header, "arrays": listing, "data_bytes": sum(len(b) for b in blobs)}
    text = json.dumps(full, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = text.encode("utf-8", "backslashreplace")  # a lone surrogate: a JSON \udcxx escape
    payload = b"".join([MAGIC, len(text).to_bytes(_LENGTH_BYTES, "little"), text, *blobs])
    _write_atomic(path, payload)


def _write_atomic(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        Path(tmp).replace(path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: Path, data: Any) -> None:
    """A small JSON file (part.json), written atomically and synced."""
    from midilm.io_utils import atomic_write_bytes

    text = json.dumps(data, indent=2, ensure_ascii=False) + "\n"
    atomic_write_bytes(path, text.encode("utf-8", "backslashreplace"))


def _read_header(fh: Any, path: Path) -> dict[str, Any]:
    if fh.read(len(MAGIC)) != MAGIC:
        raise DatasetError(f"{path}: not a midilm preparation record")
    length = int.from_bytes(fh.read(_LENGTH_BYTES), "little")
    try:
        header = json.loads(fh.read(length).decode())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DatasetError(f"{path}: damaged preparation record ({err})") from err
    if not isinstance(header, dict):
        raise DatasetError(f"{path}: damaged preparation record")
    return header


def read_record(path: Path, *, arrays: bool = True, names: Sequence[str] | None = None) -> Record:
    """A record; ``arrays=False`` reads the header only (fast), ``names`` only those arrays."""
    try:
        with path.open("rb") as fh:
            header = _read_header(fh, path)
            out: dict[str, np.ndarray] = {}
            if arrays:
                for name, dtype, count in header["arrays"]:
                    dt = np.dtype(dtype)
                    if names is not None and name not in names:
                        fh.seek(dt.itemsize * count, os.SEEK_CUR)
                        continue
                    data = fh.read(dt.itemsize * count)
                    if len(data) != dt.itemsize * count:
                        raise DatasetError(f"{path}: truncated preparation record")
                    out[name] = np.frombuffer(data, dtype=dt)
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing preparation record") from None
    except OSError as err:
        raise DatasetError(f"{path}: unreadable preparation record ({err})") from err
    header.pop("arrays", None)
    header.pop("data_bytes", None)
    return Record(header, out)


def record_is_valid(path: Path) -> bool:
    """Whether a complete record is there (its size matches its header)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as fh:
            header = _read_header(fh, path)
            return size == fh.tell() + int(header["data_bytes"])
    except (OSError, DatasetError, KeyError, TypeError, ValueError):
        return False


def iter_items(work: Path) -> Iterator[tuple[str, str | None]]:
    """``(item, key)`` of every line of a work folder's ``items.jsonl``, in order."""
    path = work / ITEMS_FILE
    try:
        with path.open(encoding="utf-8") as fh:
            for line in fh:
                entry = json.loads(line)
                yield entry["item"], entry["key"]
    except FileNotFoundError:
        raise DatasetError(f"{path}: missing; {work} is not a complete preparation part") from None
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DatasetError(f"{path}: damaged item list ({err})") from err
