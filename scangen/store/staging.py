"""All-or-nothing store writes: build in a temporary folder beside the store, move into place at the end.

A new store is built whole in `.<name>.partial-<id>/` and renamed to `<name>`; a failed build removes
the partial folder and leaves nothing behind. Adding a model to an existing real store builds the
model's files in the partial folder and moves them in, meta.json last. Replacing a store (the
caller's overwrite flag) swaps the old folder out only once the new one is complete.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from .schema import EMBEDDINGS_DIR, META_FILE, REGISTERED_DIR, SLIDES_FILE, StoreValidationError


def is_store(folder: Path) -> bool:
    """True when `folder` holds a meta.json (a store, complete or not)."""
    return (Path(folder) / META_FILE).is_file()


def check_target(store: Path) -> None:
    """A target folder must be a store or absent/empty: never write into an unrelated folder."""
    if store.exists() and not store.is_dir():
        raise StoreValidationError(f"{store}: exists and is not a folder")
    if store.is_dir() and not is_store(store) and any(store.iterdir()):
        raise StoreValidationError(
            f"{store}: folder is not empty and holds no meta.json (not a store); choose an empty or new folder"
        )


@contextmanager
def staging_folder(store: Path) -> Iterator[Path]:
    """A fresh temporary folder beside `store`, removed when the block ends (its content is moved
    out by `publish_new` / `publish_model` before that on success)."""
    store.parent.mkdir(parents=True, exist_ok=True)
    tmp = store.parent / f".{store.name}.partial-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def publish_new(tmp: Path, store: Path) -> None:
    """Move the complete store built in `tmp` to `store`, replacing an existing store folder."""
    if store.is_dir() and not any(store.iterdir()):
        store.rmdir()
    if not store.exists():
        os.rename(tmp, store)
        return
    trash = store.parent / f".{store.name}.replaced-{uuid.uuid4().hex[:8]}"
    os.rename(store, trash)
    try:
        os.rename(tmp, store)
    except OSError:
        os.rename(trash, store)
        raise
    shutil.rmtree(trash, ignore_errors=True)


def publish_model(tmp: Path, store: Path, fm: str) -> None:
    """Move model `fm`'s tables built in `tmp` into the existing `store`, then its meta.json.

    Each move is an atomic rename; meta.json (which lists the model) goes last, so until then the
    store reads as before.
    """
    for sub in (EMBEDDINGS_DIR, REGISTERED_DIR):
        src = tmp / sub / f"{fm}.parquet"
        dest = store / sub / f"{fm}.parquet"
        if src.is_file():
            dest.parent.mkdir(exist_ok=True)
            os.replace(src, dest)
        elif dest.is_file():
            dest.unlink()  # an overwritten model that no longer has registered tiles
    os.replace(tmp / META_FILE, store / META_FILE)


def copy_store_header(store: Path, tmp: Path) -> None:
    """slides.parquet and meta.json of `store` into `tmp` (the writers check a new model against them)."""
    for name in (SLIDES_FILE, META_FILE):
        shutil.copy2(store / name, tmp / name)
