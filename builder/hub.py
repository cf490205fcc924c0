"""Export prepared splits as Hub-layout Parquet shards with a dataset card, and push them.

``datasets`` >= 4 runs no loading scripts, so what people load from the Hub is plain Parquet plus
the YAML header of ``README.md``. :func:`export_dataset` writes exactly what
``Dataset.push_to_hub`` would write, into a local folder::

    <to_dir>/<config>/<split>-00000-of-00003.parquet   (sharded by size, media bytes embedded)
    <to_dir>/README.md                                 (configs:, dataset_info:, card body)

Stock ``datasets.load_dataset(to_dir, config)`` reads that folder, and after :func:`push_folder`
stock ``datasets.load_dataset("<org>/<name>", config)`` reads the same rows from the Hub. Both an
export into a folder and a push to the Hub merge with the card already there, config by config
(:func:`_merge_cards`), so configs exported or pushed one after the other all stay loadable.

The card body is ``dataset_card.md`` (see :func:`find_card_body`). The licence is stated as
"see the figshare record": no public source states the licence of RAT7M, so none is invented.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import uuid
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import datasets
import yaml
from datasets.arrow_writer import get_writer_batch_size_from_data_size, get_writer_batch_size_from_features
from datasets.features.features import require_decoding
from datasets.info import DatasetInfo
from datasets.splits import SplitDict, SplitInfo
from datasets.table import embed_table_storage
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCardData

__all__ = [
    "CARD_BODY_FILENAME",
    "DEFAULT_MAX_SHARD_SIZE",
    "FIGSHARE_RECORD_URL",
    "export_dataset",
    "exported_configs",
    "find_card_body",
    "load_line",
    "push_folder",
    "render_card",
    "size_category",
    "write_card",
]

DEFAULT_MAX_SHARD_SIZE = "500MB"  # what push_to_hub uses (datasets.config.MAX_SHARD_SIZE)
CARD_BODY_FILENAME = "dataset_card.md"
FIGSHARE_RECORD_URL = "https://doi.org/10.6084/m9.figshare.c.5295370.v3"

# Card metadata that every export (re)writes. The licence: RAT7M's licence is not stated in any
# source found, so the card says "other" and names/links the figshare record rather than
# inventing one. `license_name` must be a lower-case slug on the Hub.
CARD_METADATA: dict[str, Any] = {
    "pretty_name": "RAT7M",
    "license": "other",
    "license_name": "see-the-figshare-record",
    "license_link": FIGSHARE_RECORD_URL,
    "task_categories": ["keypoint-detection"],
    "tags": [
        "pose-estimation",
        "animal-pose",
        "3d-pose",
        "motion-capture",
        "multiview",
        "rat",
        "neuroscience",
    ],
}

# Hub size categories (number of examples), upper bounds exclusive.
_SIZE_CATEGORIES = [
    (1_000, "n<1K"),
    (10_000, "1K<n<10K"),
    (100_000, "10K<n<100K"),
    (1_000_000, "100K<n<1M"),
    (10_000_000, "1M<n<10M"),
    (100_000_000, "10M<n<100M"),
    (1_000_000_000, "100M<n<1B"),
    (10_000_000_000, "1B<n<10B"),
    (100_000_000_000, "10B<n<100B"),
    (1_000_000_000_000, "100B<n<1T"),
]

# Temporary folders live where huggingface_hub's upload_folder ignores them by default
# (`.cache/huggingface/`), on the same file system as the export so the final rename is atomic.
_TMP_PARENT = Path(".cache") / "huggingface" / "rat7m-export"
_STAGE_PARENT = Path(".cache") / "huggingface" / "rat7m-push"
_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")
_NOTES_BEGIN = "<!-- rat7m-build-notes config={config} -->"
_NOTES_END = "<!-- /rat7m-build-notes -->"
_NOTES_BLOCK_RE = re.compile(
    r"<!-- rat7m-build-notes config=(?P<config>[^ ]+) -->\n(?P<text>.*?)<!-- /rat7m-build-notes -->\n?",
    re.S,
)
_NOTES_HEADING = "## Build notes"
_PLACEHOLDER_MARK = "<!-- rat7m-placeholder-card -->"
# Marks a card rat7m wrote: what follows it is rewritten by every export and push (hidden on the Hub).
_GENERATED_MARK = "<!-- rat7m: the sections below are rewritten by every `rat7m export` / `rat7m push` -->"
_CONFIGS_HEADING = "## Configs in this repository"
_ENTRY_KEYS = ("configs", "dataset_info")


# --------------------------------------------------------------------------------------------- card body


def _card_body_candidates() -> list[Path]:
    here = Path(__file__).resolve().parent
    candidates = []
    # 1. Source checkout / editable install: `builder/hub.py` -> repository root. Only trusted when
    #    the parent really is this project (never pick up a stray file next to site-packages).
    root = here.parent
    pyproject = root / "pyproject.toml"
    if pyproject.is_file() and re.search(r'(?m)^name\s*=\s*"rat7m"', pyproject.read_text(encoding="utf-8")):
        candidates.append(root / CARD_BODY_FILENAME)
    # 2. Installed package data: `rat7m_builder/dataset_card.md`.
    candidates.append(here / CARD_BODY_FILENAME)
    return candidates


def find_card_body(card_body_path: str | os.PathLike | None = None) -> Path:
    """Locate the dataset card body.

    Order: an explicit ``card_body_path``; the environment variable ``RAT7M_CARD_BODY``; the
    repository root's ``dataset_card.md`` (source checkout or editable install, recognised by its
    ``pyproject.toml``); ``dataset_card.md`` shipped inside the ``rat7m_builder`` package.
    Raises ``FileNotFoundError`` naming every place looked at: a card is never published without
    its body.
    """
    if card_body_path is not None:
        path = Path(card_body_path)
        if not path.is_file():
            raise FileNotFoundError(f"Dataset card body not found: {path}")
        return path
    env = os.environ.get("RAT7M_CARD_BODY")
    if env:
        path = Path(env)
        if not path.is_file():
            raise FileNotFoundError(f"RAT7M_CARD_BODY points to a missing file: {path}")
        return path
    candidates = _card_body_candidates()
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError(
        "Dataset card body `dataset_card.md` not found; looked at: "
        + ", ".join(str(p) for p in candidates)
        + ". Pass card_body_path= or set RAT7M_CARD_BODY."
    )


def _split_front_matter(text: str) -> tuple[dict, str]:
    """Split ``---\\nyaml\\n---\\nbody`` into (metadata, body); text without front matter is all body."""
    if text.startswith("---"):
        match = re.match(r"^---[ \t]*\r?\n(.*?)\r?\n---[ \t]*(?:\r?\n|$)", text, re.S)
        if match:
            data = yaml.safe_load(match.group(1)) or {}
            if not isinstance(data, dict):
                raise ValueError("The YAML header of the card must be a mapping")
            return data, text[match.end() :]
    return {}, text


# --------------------------------------------------------------------------------------------- helpers


def size_category(num_examples: int) -> str:
    """The Hub's ``size_categories`` value for a number of examples."""
    for bound, name in _SIZE_CATEGORIES:
        if num_examples < bound:
            return name
    return "n>1T"


def _nbytes(ds: datasets.Dataset) -> int:
    """Uncompressed size as push_to_hub reports it (embedding external media files included)."""
    estimate = getattr(ds, "_estimate_nbytes", None)
    if callable(estimate):
        return int(estimate())
    return int(ds.data.nbytes)


def _format_note_value(value: Any) -> str:
    if isinstance(value, (dict, list, tuple)):
        return "`" + yaml.safe_dump(value, default_flow_style=True, sort_keys=False).strip() + "`"
    return str(value)


def _render_notes_block(config_name: str, notes: dict) -> str:
    lines = [_NOTES_BEGIN.format(config=config_name), f"### `{config_name}`", ""]
    for key, value in notes.items():
        if isinstance(value, (list, tuple)) and value and all(isinstance(item, str) for item in value):
            # lines of text (what `Rat7M.build_notes` holds): a nested list, readable on the card
            lines.append(f"- **{key}**:")
            lines.extend(f"  - {' '.join(item.split())}" for item in value)
            continue
        lines.append(f"- **{key}**: {_format_note_value(value)}")
    lines.append("")
    lines.append(_NOTES_END)
    return "\n".join(lines) + "\n"


def _existing_notes(readme_text: str) -> dict[str, str]:
    return {m.group("config"): m.group(0) for m in _NOTES_BLOCK_RE.finditer(readme_text)}


def _human_size(num_bytes: int | None) -> str:
    if not num_bytes:
        return "–"
    size = float(num_bytes)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1000 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1000
    return f"{size:.1f} TB"  # pragma: no cover


def _config_table(metadata: dict) -> str:
    """The "Configs in this repository" table: every ``configs:`` entry, sizes from ``dataset_info:``."""
    infos = {e.get("config_name", "default"): e for e in _entries(metadata.get("dataset_info"), "dataset_info")}
    lines = ["| config | rows per split | Parquet size |", "| :-- | :-- | --: |"]
    for entry in sorted(_entries(metadata.get("configs"), "configs"), key=lambda e: str(e.get("config_name"))):
        name = str(entry.get("config_name"))
        info = infos.get(name, {})
        splits = info.get("splits") or []
        rows = ", ".join(f"{s.get('name')}: {int(s.get('num_examples') or 0):,}" for s in splits if isinstance(s, dict))
        lines.append(f"| `{name}` | {rows or '–'} | {_human_size(info.get('download_size'))} |")
    return "\n".join(lines) + "\n"


def render_card(
    metadata: DatasetCardData | dict, body: str, notes_blocks: dict[str, str], *, config_table: str | None = None
) -> str:
    """README text of a rat7m card: YAML header, the card body, then the generated sections.

    The generated sections follow :data:`_GENERATED_MARK` and are rewritten by every export and push:
    "Configs in this repository" (``config_table``; by default made from the ``configs:`` and
    ``dataset_info:`` of ``metadata``) and "Build notes" (one block per config).
    """
    data = metadata if isinstance(metadata, DatasetCardData) else DatasetCardData(**metadata)
    if config_table is None:
        config_table = _config_table(data.to_dict())
    text = f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n\n{_GENERATED_MARK}\n"
    text += f"\n{_CONFIGS_HEADING}\n\n{config_table}"
    if notes_blocks:
        text += f"\n{_NOTES_HEADING}\n\n" + "\n".join(notes_blocks[c] for c in sorted(notes_blocks))
    return text


# --------------------------------------------------------------------------------------------- card merge


@dataclass
class _Card:
    """A README.md taken apart. ``ours``: written by rat7m (its generated sections can be rewritten)."""

    meta: dict
    rest: str  # everything after the YAML header, verbatim
    body: str  # ours: the prose without the generated sections; else == rest
    notes: dict[str, str]
    ours: bool


def _entries(value: Any, key: str) -> list[dict]:
    """The entries of ``configs:`` / ``dataset_info:`` as a list (``dataset_info`` may be one mapping)."""
    if value is None:
        return []
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(e, dict) for e in value):
        return list(value)
    raise ValueError(f"`{key}:` of the card's YAML must be a list of mappings, found {type(value).__name__}")


def _parse_card(text: str) -> _Card:
    """Take a README apart; ``ValueError`` if its YAML header cannot be read."""
    try:
        meta, rest = _split_front_matter(text)
    except yaml.YAMLError as error:
        raise ValueError(f"its YAML header cannot be read ({error})") from error
    for key in _ENTRY_KEYS:
        _entries(meta.get(key), key)  # validate early
    legacy = meta.get("pretty_name") == CARD_METADATA["pretty_name"] and (
        meta.get("license_name") == CARD_METADATA["license_name"] or _NOTES_BLOCK_RE.search(rest) is not None
    )
    if _GENERATED_MARK in rest:
        return _Card(meta, rest, rest.split(_GENERATED_MARK, 1)[0], _existing_notes(rest), True)
    if legacy:  # written by an earlier rat7m: body, then (maybe) the build notes
        heading = re.search(r"(?m)^## Build notes[ \t]*\r?\n", rest)
        return _Card(meta, rest, rest[: heading.start()] if heading else rest, _existing_notes(rest), True)
    return _Card(meta, rest, rest, {}, False)


def _merge_entries(old: Any, key: str, new: dict[str, dict]) -> list[dict] | dict | None:
    """Other configs' entries kept as they are, ``new`` ones replace theirs; sorted like ``datasets`` does."""
    total = {e.get("config_name", "default"): e for e in _entries(old, key)}
    total.update(new)
    if not total:
        return None
    if key == "dataset_info" and len(total) == 1:
        return next(iter(total.values()))  # a mapping when there is one config (what push_to_hub writes)
    return [{**e, "config_name": name} if "config_name" not in e else e for name, e in sorted(total.items())]


def _pick_entries(card: _Card, configs: list[str]) -> dict[str, dict[str, dict]]:
    """``{"configs": {config: entry}, "dataset_info": {config: entry}}`` of ``configs`` in ``card``."""
    picked = {}
    for key in _ENTRY_KEYS:
        entries = {e.get("config_name", "default"): e for e in _entries(card.meta.get(key), key)}
        missing = [c for c in configs if c not in entries]
        if missing:
            raise ValueError(f"the card has no `{key}:` entry for {', '.join(map(repr, missing))}: export it again")
        picked[key] = {c: entries[c] for c in configs}
    return picked


def _merge_cards(old: _Card | None, new: _Card, configs: list[str]) -> str:
    """The README that results from adding (or replacing) ``configs`` of card ``new`` to card ``old``.

    ``old`` is the card already at the destination (an export folder, or the Hub at a revision), or
    None. Other configs' ``configs:`` and ``dataset_info:`` entries (and build notes) are kept as they
    are; the entries of ``configs`` come from ``new``.

    When both cards were written by rat7m, the prose (card body) and the metadata keys rat7m writes
    come from ``new``; metadata keys ``new`` does not set are kept; the size category and the
    generated sections ("Configs in this repository", "Build notes") are rewritten from the merged
    entries. When ``old`` was not written by rat7m (a hand-written card), only its ``configs:`` and
    ``dataset_info:`` entries of ``configs`` change: its other YAML keys and its text are kept as they
    are, and a ``UserWarning`` says so.
    """
    picked = _pick_entries(new, configs)
    existing = old is not None
    if old is None:  # a new card: the source card, holding only the configs given
        others = {k: v for k, v in new.meta.items() if k not in _ENTRY_KEYS}
        old = _Card(others, new.rest, new.body, {}, new.ours)
    meta = dict(old.meta)
    if old.ours and new.ours:
        meta.update({k: v for k, v in new.meta.items() if k not in _ENTRY_KEYS})
    for key in _ENTRY_KEYS:
        meta[key] = _merge_entries(old.meta.get(key), key, picked[key])
    if not old.ours:
        if existing:
            warnings.warn(
                "The existing README.md was not written by rat7m: its text and YAML keys are kept as they are; "
                f"only the `configs:` and `dataset_info:` entries of {', '.join(map(repr, configs))} were updated",
                UserWarning,
                stacklevel=3,
            )
        header = DatasetCardData(**{k: v for k, v in meta.items() if v is not None}).to_yaml()
        return f"---\n{header}\n---\n{old.rest}"

    listed = {e["config_name"] for e in _entries(meta["configs"], "configs")}
    notes = {c: b for c, b in old.notes.items() if c not in configs and c in listed}
    if new.ours:
        notes.update({c: new.notes[c] for c in configs if c in new.notes})
    body = new.body if new.ours else old.body
    # Size category from the largest config (configs are views of the same recordings, so their
    # row counts are not added up).
    largest = max(
        (
            sum(int(s.get("num_examples") or 0) for s in (e.get("splits") or []) if isinstance(s, dict))
            for e in _entries(meta["dataset_info"], "dataset_info")
        ),
        default=0,
    )
    fixed = {k: meta.pop(k) for k in CARD_METADATA if k in meta}
    fixed["size_categories"] = [size_category(largest)]
    meta.pop("size_categories", None)
    ordered = {**fixed, **{k: v for k, v in meta.items() if k not in _ENTRY_KEYS}}
    ordered.update({k: meta[k] for k in _ENTRY_KEYS})
    ordered = {k: v for k, v in ordered.items() if v is not None}
    return render_card(ordered, body, notes)


def _write_text_tmp(path: Path, text: str) -> Path:
    """``text`` written to a new hidden file beside ``path`` (to be renamed onto it); removed if that fails."""
    # A unique name opened with "x", not `tempfile.mkstemp`: mkstemp's files are 0600 whatever the
    # umask, and the card of a shared export folder must be as readable as its Parquet files.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp, "x", encoding="utf-8", newline="\n") as f:
            f.write(text)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return tmp


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = _write_text_tmp(path, text)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _write_split(ds: datasets.Dataset, split: str, out_dir: Path, max_shard_size: int) -> tuple[list[str], int, int]:
    """Write one split as push_to_hub does; return (file names, uploaded bytes, uncompressed bytes)."""
    nbytes = _nbytes(ds)
    writer_batch_size = get_writer_batch_size_from_features(ds.features)
    writer_batch_size = writer_batch_size or get_writer_batch_size_from_data_size(len(ds), nbytes)
    num_shards = int(nbytes / max_shard_size) + 1
    num_shards = max(1, min(num_shards, len(ds)))  # never an empty shard (push_to_hub can write some)
    embed = any(require_decoding(f, ignore_decode_attribute=True) for f in ds.features.values())
    names = []
    written = 0
    for index in range(num_shards):
        shard = ds.shard(num_shards=num_shards, index=index, contiguous=True)
        if embed:
            # Image/Video/Audio given by path -> bytes in the Parquet (what push_to_hub does).
            shard = shard.with_format("arrow").map(
                embed_table_storage, batched=True, batch_size=writer_batch_size, keep_in_memory=True
            )
        name = f"{split}-{index:05d}-of-{num_shards:05d}.parquet"
        shard.to_parquet(str(out_dir / name), batch_size=writer_batch_size)
        written += (out_dir / name).stat().st_size
        names.append(name)
    return names, written, nbytes


# --------------------------------------------------------------------------------------------- export


def export_dataset(
    dataset_dict: datasets.DatasetDict,
    config_name: str,
    to_dir: str | os.PathLike,
    *,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
    card_body_path: str | os.PathLike | None = None,
    build_notes: dict | None = None,
) -> dict:
    """Write ``dataset_dict`` as config ``config_name`` of the Hub-layout folder ``to_dir``.

    Shards: ``<to_dir>/<config>/<split>-XXXXX-of-YYYYY.parquet``, as many per split as
    ``max_shard_size`` (uncompressed Arrow bytes, like push_to_hub) requires; media bytes are
    embedded. The config folder is written in a temporary folder and renamed into place, so an
    interrupted export never leaves half a config; other configs in ``to_dir`` are left alone.

    ``README.md`` is created or merged (see :func:`_merge_cards`): the ``configs:`` and
    ``dataset_info:`` entries of other configs are kept, this config's are replaced; the card
    metadata (pretty_name, licence, task, tags, size category) is rewritten; the body is re-read
    from the card body file (see :func:`find_card_body`) followed by the generated sections: the
    "Configs in this repository" table (every config of the card) and per-config "Build notes"
    (``build_notes`` of this export; the notes of other configs are kept). A ``README.md`` that
    rat7m did not write keeps its text and other YAML keys (only the entries change, with a warning).

    Returns a summary: ``{"config", "dir", "readme", "files", "splits": {split: {...}},
    "num_examples", "num_bytes", "download_size"}`` (paths relative to ``to_dir``).
    """
    if not isinstance(dataset_dict, datasets.DatasetDict):
        raise TypeError(f"export_dataset needs a datasets.DatasetDict, got {type(dataset_dict).__name__}")
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config_name) or config_name == "data":
        raise ValueError(f"Invalid config name: {config_name!r}")
    for split in dataset_dict:
        if not re.fullmatch(r"\w+(\.\w+)*", split):
            raise ValueError(f"Invalid split name: {split!r}")
    body_path = find_card_body(card_body_path)  # fail before writing anything
    card_meta_from_body, body = _split_front_matter(body_path.read_text(encoding="utf-8"))
    if _PLACEHOLDER_MARK in body:
        warnings.warn(f"{body_path} is still the placeholder card body", UserWarning, stacklevel=2)
    max_bytes = convert_file_size_to_int(max_shard_size)
    if max_bytes <= 0:
        raise ValueError(f"max_shard_size must be positive, got {max_shard_size!r}")

    to_dir = Path(to_dir)
    to_dir.mkdir(parents=True, exist_ok=True)
    tmp_parent = to_dir / _TMP_PARENT
    tmp_parent.mkdir(parents=True, exist_ok=True)
    stale_re = re.compile(re.escape(config_name) + r"\.(old-)?[0-9a-f]{12}")
    for stale in tmp_parent.iterdir():  # left by an interrupted export of this config
        if stale_re.fullmatch(stale.name):
            shutil.rmtree(stale, ignore_errors=True)
    tmp_dir = tmp_parent / f"{config_name}.{uuid.uuid4().hex[:12]}"
    tmp_dir.mkdir()

    features = None
    splits_summary: dict[str, dict] = {}
    split_dict = SplitDict()
    try:
        for split, ds in dataset_dict.items():
            if features is None:
                features = ds.features
            elif ds.features != features:
                raise ValueError(f"Split {split!r} of {config_name!r} differs in features from the first")
            names, written, nbytes = _write_split(ds, split, tmp_dir, max_bytes)
            split_dict.add(SplitInfo(name=split, num_bytes=nbytes, num_examples=len(ds)))
            splits_summary[split] = {
                "num_examples": len(ds),
                "num_bytes": nbytes,
                "download_size": written,
                "num_shards": len(names),
                "files": [f"{config_name}/{n}" for n in names],
            }
        # The card is rendered before the swap so that shards and card change as close together as
        # possible (a card whose split sizes disagree with the shards fails `load_dataset`'s checks).
        readme = to_dir / "README.md"
        readme_text = _render_readme(
            readme.read_text(encoding="utf-8") if readme.exists() else None,
            config_name,
            _dataset_info(config_name, features, split_dict, splits_summary),
            list(dataset_dict),
            card_meta_from_body,
            body,
            build_notes,
        )
        # The card is written (beside README.md) before the swap too: a card that cannot be written
        # (e.g. a build note that is not UTF-8) must fail while the previous export is still whole.
        readme_tmp = _write_text_tmp(readme, readme_text)
        try:
            # Swap the new config folder in; the old one (if any) goes away only after the rename.
            final = to_dir / config_name
            old = None
            if final.exists():
                old = tmp_parent / f"{config_name}.old-{uuid.uuid4().hex[:12]}"
                os.replace(final, old)
            os.replace(tmp_dir, final)
            os.replace(readme_tmp, readme)
        finally:
            readme_tmp.unlink(missing_ok=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp_dir.exists():
            shutil.rmtree(tmp_dir, ignore_errors=True)
        try:
            tmp_parent.rmdir()
            tmp_parent.parent.rmdir()
            tmp_parent.parent.parent.rmdir()
        except OSError:
            pass

    download_size = sum(s["download_size"] for s in splits_summary.values())
    dataset_size = sum(s["num_bytes"] for s in splits_summary.values())
    return {
        "config": config_name,
        "dir": str(to_dir),
        "readme": "README.md",
        "files": [f for s in splits_summary.values() for f in s["files"]],
        "splits": splits_summary,
        "num_examples": sum(s["num_examples"] for s in splits_summary.values()),
        "num_bytes": dataset_size,
        "download_size": download_size,
    }


def write_card(
    to: str | os.PathLike,
    config_name: str,
    features: datasets.Features,
    splits: dict[str, dict],
    *,
    card_body_path: str | os.PathLike | None = None,
    build_notes: dict | None = None,
    storage_options: dict | None = None,
) -> str:
    """Create or merge the ``README.md`` of an export whose shards of ``config_name`` are written already.

    The same card :func:`export_dataset` writes, for engines that write the shards themselves
    (``rat7m_builder.ray_export``). ``to`` is a folder or an fsspec URL (``s3://bucket/rat7m``).

    Args:
        features: the config's features.
        splits: split → ``{"num_examples", "num_bytes", "download_size"}``, in card order.

    Returns:
        The README text written.
    """
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", config_name) or config_name == "data":
        raise ValueError(f"Invalid config name: {config_name!r}")
    body_path = find_card_body(card_body_path)
    card_meta_from_body, body = _split_front_matter(body_path.read_text(encoding="utf-8"))
    if _PLACEHOLDER_MARK in body:
        warnings.warn(f"{body_path} is still the placeholder card body", UserWarning, stacklevel=2)
    split_dict = SplitDict()
    for split, sizes in splits.items():
        split_dict.add(SplitInfo(name=split, num_bytes=sizes["num_bytes"], num_examples=sizes["num_examples"]))
    fs, root = fsspec.core.url_to_fs(str(to), **(storage_options or {}))
    readme = f"{root.rstrip('/')}/README.md"
    old_text = fs.cat_file(readme).decode("utf-8") if fs.exists(readme) else None
    text = _render_readme(
        old_text,
        config_name,
        _dataset_info(config_name, features, split_dict, splits),
        list(splits),
        card_meta_from_body,
        body,
        build_notes,
    )
    if isinstance(fs, LocalFileSystem):
        Path(root).mkdir(parents=True, exist_ok=True)
        _write_text_atomic(Path(readme), text)
    else:
        fs.pipe_file(readme, text.encode("utf-8"))  # one object put: replaced whole
    return text


def _dataset_info(config_name: str, features, split_dict: SplitDict, splits_summary: dict) -> DatasetInfo:
    """The ``dataset_info`` entry of a config, with the fields push_to_hub fills."""
    return DatasetInfo(
        config_name=config_name,
        features=features if features is not None else datasets.Features(),
        splits=split_dict,
        download_size=sum(s["download_size"] for s in splits_summary.values()),
        dataset_size=sum(s["num_bytes"] for s in splits_summary.values()),
    )


def _render_readme(
    old_text: str | None,
    config_name: str,
    info: DatasetInfo,
    splits: list[str],
    card_meta_from_body: dict,
    body: str,
    build_notes: dict | None,
) -> str:
    """The merged README text (``old_text``: the README already there, if any); see :func:`_merge_cards`."""
    info_entry = info._to_yaml_dict()
    info_entry.pop("config_name", None)
    meta = {
        **card_meta_from_body,
        **CARD_METADATA,
        "configs": [
            {"config_name": config_name, "data_files": [{"split": s, "path": f"{config_name}/{s}-*"} for s in splits]}
        ],
        "dataset_info": [{"config_name": config_name, **info_entry}],
    }
    notes = {config_name: _render_notes_block(config_name, build_notes)} if build_notes else {}
    new = _Card(meta, body, body, notes, True)
    old = None
    if old_text is not None:
        try:
            old = _parse_card(old_text)
        except ValueError as error:
            raise ValueError(f"The README.md already in the export folder: {error}. Fix or remove it.") from error
    return _merge_cards(old, new, [config_name])


# --------------------------------------------------------------------------------------------- push


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    configs: list[str] | None = None,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload configs of an export folder to the dataset repository ``repo_id``; return the repository URL.

    ``configs``: the configs of ``folder`` to upload (default: all of them). Creates the repository if
    needed (``private`` only applies to a new repository) and the branch ``revision`` if given.

    The card is merged with the ``README.md`` already on the Hub at that revision (see
    :func:`_merge_cards`): the other configs' ``configs:`` / ``dataset_info:`` entries, build notes
    and Parquet files stay; the uploaded configs' entries are replaced, and their remote files that
    the folder no longer holds (e.g. shards of a re-export with fewer shards) are deleted in the
    same upload, so a ``<config>/<split>-*`` pattern never matches stale shards. A hand-written card
    keeps its text and YAML keys; only the uploaded configs' entries are added to it. A card whose
    YAML cannot be read is not overwritten: ``ValueError``, nothing uploaded. The upload is based on
    the commit whose card was read (``parent_commit``): if the branch moves meanwhile, it fails
    instead of overwriting the other commit's card.

    The upload is ``upload_folder`` of a staging folder (the card and hard links to the shards,
    under ``<folder>/.cache/huggingface/``, removed afterwards): files whose remote oid already
    matches are skipped, so re-running after an interruption resumes (with ``hf_xet`` installed the
    upload is split into several commits by itself).

    The token comes from ``token`` or the standard discovery (``HF_TOKEN``, ``hf auth login``);
    it is never printed or logged here.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    readme = folder / "README.md"
    if not readme.is_file():
        raise FileNotFoundError(f"{folder} has no README.md: export a config into it first")
    exported = exported_configs(folder)
    if configs is None:
        configs = exported
    configs = list(dict.fromkeys(configs))
    missing = [c for c in configs if c not in exported]
    if missing:
        raise ValueError(
            f"{folder} holds no export of {', '.join(map(repr, missing))} (it holds: {', '.join(exported) or 'none'})"
        )
    if not configs:
        raise ValueError(f"{folder} holds no exported config: export one into it first")
    try:
        local = _parse_card(readme.read_text(encoding="utf-8"))
        _pick_entries(local, configs)  # a card lacking the entries fails before any request
    except ValueError as error:
        raise ValueError(f"{readme}: {error}") from error

    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    repo_id = repo_url.repo_id or repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    # The card on the Hub, read at a fixed commit that is also the upload's parent commit.
    head = api.repo_info(repo_id, repo_type="dataset", revision=revision)
    remote = None
    if any(sibling.rfilename == "README.md" for sibling in head.siblings or []):
        path = api.hf_hub_download(repo_id, "README.md", repo_type="dataset", revision=head.sha)
        try:
            remote = _parse_card(Path(path).read_text(encoding="utf-8"))
        except (ValueError, UnicodeDecodeError) as error:
            raise ValueError(
                f"The README.md of {repo_id} (revision {revision or 'main'}) is kept as it is and nothing was "
                f"uploaded: {error}. Fix or delete it on the Hub, then push again."
            ) from error
    card_text = _merge_cards(remote, local, configs)

    stage = _staging_folder(folder)
    try:
        _write_text_atomic(stage / "README.md", card_text)
        for config in configs:
            (stage / config).mkdir()
            for shard in sorted((folder / config).iterdir()):
                if _SHARD_RE.match(shard.name) and shard.is_file():
                    _link(shard, stage / config / shard.name)
        api.upload_folder(
            repo_id=repo_id,
            folder_path=str(stage),
            repo_type="dataset",
            revision=revision,
            commit_message=commit_message or f"Upload RAT7M ({', '.join(configs)})",
            delete_patterns=[f"{c}/*" for c in configs],
            parent_commit=head.sha,
        )
    finally:
        shutil.rmtree(stage, ignore_errors=True)
        if folder in stage.parents:  # the empty .cache/huggingface/rat7m-push folders too
            for parent in (stage.parent, stage.parent.parent, stage.parent.parent.parent):
                try:
                    parent.rmdir()
                except OSError:
                    break
    url = str(repo_url).rstrip("/")
    if revision is not None:
        url += f"/tree/{revision}"
    return url


def _staging_folder(folder: Path) -> Path:
    """A new empty folder for the files of one upload: inside ``folder`` (so shards can be hard links)."""
    try:
        parent = folder / _STAGE_PARENT
        parent.mkdir(parents=True, exist_ok=True)
        stage = parent / uuid.uuid4().hex[:12]
        stage.mkdir()
        return stage
    except OSError:  # a read-only export folder: stage elsewhere (shards as symbolic links)
        return Path(tempfile.mkdtemp(prefix="rat7m-push-stage-"))


def _link(src: Path, dst: Path) -> None:
    """``dst`` names the same bytes as ``src``: a hard link, else a symbolic link, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        try:
            os.symlink(src.resolve(), dst)
        except OSError:
            shutil.copy2(src, dst)


def exported_configs(folder: str | os.PathLike) -> list[str]:
    """Config folders of an export: sub-folders holding ``<split>-XXXXX-of-YYYYY.parquet`` shards."""
    return sorted(
        p.name
        for p in Path(folder).iterdir()
        if p.is_dir() and not p.name.startswith(".") and any(_SHARD_RE.match(f.name) for f in p.iterdir())
    )


def load_line(repo_id: str, config: str, revision: str | None = None) -> str:
    """The line to paste to load a pushed config, e.g. ``datasets.load_dataset("org/rat7m", "frames")``."""
    args = [_py_str(repo_id), _py_str(config)]
    if revision is not None:
        args.append(f"revision={_py_str(revision)}")
    return f"datasets.load_dataset({', '.join(args)})"


def _py_str(s: str) -> str:
    """A double-quoted Python string literal."""
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'
