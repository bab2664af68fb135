"""Turn a config's ``set`` into the samples a run answers (``samples_for_config``).

``set`` is either ``NAME`` / ``NAME@VERSION`` (a stored set; the latest version when none is
given) or a file path (also ``samples_path`` with ``source: set``), imported on the fly as a set
named after the file's stem, so that a run's rows always name a set version. Where the set is
read from follows where the recorder writes: the database (``Settings.database_url``), or the
server (``Settings.server_url``), whose API is asked for the set; a file is then read locally
and not stored (the log says so), and its rows carry item ids but no set id or version.
"""

from __future__ import annotations

import logging
import os
import random
from pathlib import Path
from typing import TYPE_CHECKING

from predwatch.config import PredictionsConfig, Settings
from predwatch.errors import DataError
from predwatch.records import Sample
from predwatch.sets.files import check_portable, read_items
from predwatch.sets.model import SetItem, SetVersion, name_for_file, parse_ref

if TYPE_CHECKING:
    from predwatch.client import ApiClient

log = logging.getLogger(__name__)

_FILE_SUFFIXES = {".json", ".jsonl", ".ndjson", ".csv", ".gz"}
PAGE_SIZE = 1000  # items per request when a set is read from a server


def samples_for_config(config: PredictionsConfig, *, settings: Settings) -> list[Sample]:
    """The samples of the config's set: all items, or ``sample_count`` of them (seeded).

    Raises:
        ConfigError: The reference is invalid. NotFound: No such set or version.
        DataError: The file cannot be read or has bad items (names file and line).
    """
    ref = config.set or config.samples_path
    if not ref:
        raise DataError("source 'set' needs 'set' (NAME[@VERSION] or a file path)")
    if is_file_ref(ref):
        version, items, name = _from_file(Path(ref).expanduser(), settings)
    else:
        name, number = parse_ref(ref)
        if settings.server_url:
            version, items = fetch_set(settings, name, number)
        else:
            from predwatch.storage import open_store

            with open_store(settings.database_url) as store:
                version, items = store.list_set_items(name, number)
    chosen = choose(len(items), config.sample_count, config.seed)
    set_id = version.set_id if version else None
    stored = version.version if version else None
    return [items[i].to_sample(i, set_name=name, set_id=set_id, version=stored) for i in chosen]


def is_file_ref(ref: str) -> bool:
    """Whether ``set`` names a file rather than ``NAME[@VERSION]``."""
    path = Path(ref).expanduser()
    return (
        os.sep in ref
        or "/" in ref
        or bool({s.lower() for s in path.suffixes} & _FILE_SUFFIXES)
        or path.is_file()
    )


def choose(count: int, sample_count: int | None, seed: int) -> list[int]:
    """Positions of the items to answer: all, or a seeded subset kept in set order."""
    if sample_count is None or sample_count >= count:
        return list(range(count))
    return sorted(random.Random(seed).sample(range(count), sample_count))


def _from_file(
    path: Path, settings: Settings
) -> tuple[SetVersion | None, list[SetItem], str]:
    if not path.is_file():
        raise DataError(f"{path}: no such file (set: expects NAME[@VERSION] or a file path)")
    name = name_for_file(path.name)
    items = read_items(path)
    if settings.server_url:
        log.warning(
            "predwatch: %s read locally as set %r (%d items); not stored on the server, so "
            "its rows carry no set id or version "
            "(import it with `predwatch sets import` to version it)", path, name, len(items),
        )
        return None, items, name
    from predwatch.storage import open_store

    with open_store(settings.database_url) as store:
        version, created = store.create_set_version(name, items, source=path.name)
    log.info(
        "predwatch: %s is set %s (%d items, %s)", path, version.ref, len(items),
        "new version" if created else "unchanged",
    )
    return version, items, name


def fetch_set(
    settings: Settings, name: str, version: int | None = None
) -> tuple[SetVersion, list[SetItem]]:
    """Read a set version and all its items from the server at ``settings.server_url``.

    Authenticates with ``settings.api_key``, else the run token.
    """
    path = f"/api/sets/{name}/versions/{version or 'latest'}"
    items: list[SetItem] = []
    found: SetVersion | None = None
    with open_client(settings) as client:
        while True:
            body = client.get(path, limit=PAGE_SIZE, offset=len(items))
            found = SetVersion.model_validate(body["version"])
            path = f"/api/sets/{name}/versions/{found.version}"  # pin it while paging
            page = [SetItem.model_validate(i) for i in body["items"]]
            for item in page:  # the server is trusted with rows, not with running code here
                try:
                    check_portable(item.validators)
                except DataError as exc:
                    raise DataError(f"set {name!r} item {item.item_id}: {exc.message}") from None
            items.extend(page)
            if not page or len(items) >= found.item_count:
                break
    assert found is not None
    return found, items


def open_client(settings: Settings) -> ApiClient:
    """The API client for the server at ``settings.server_url``, authenticated."""
    from predwatch.client import ApiClient

    return ApiClient(settings.server_url or "", token=settings.run_token,
                     api_key=settings.api_key,
                     total_timeout=settings.delivery_timeout_seconds)
