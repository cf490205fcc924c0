"""Export prepared splits as Hub-layout Parquet shards with a dataset card, and push them.

``datasets`` >= 4 runs no loading scripts, so what people load from the Hub is plain Parquet plus
the YAML header of ``README.md``. :func:`export_dataset` writes exactly what
``Dataset.push_to_hub`` would write, into a local folder::

    <to_dir>/<config>/<split>-00000-of-00003.parquet   (sharded by size, media bytes embedded)
    <to_dir>/README.md                                 (configs:, dataset_info:, card body)

Stock ``datasets.load_dataset(to_dir, config)`` reads that folder, and after :func:`push_folder`
stock ``datasets.load_dataset("<org>/<name>", config)`` reads the same rows from the Hub.

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
from pathlib import Path
from typing import Any

import datasets
import yaml
from datasets.arrow_writer import get_writer_batch_size_from_data_size, get_writer_batch_size_from_features
from datasets.features.features import require_decoding
from datasets.info import DatasetInfo, DatasetInfosDict
from datasets.splits import SplitDict, SplitInfo
from datasets.table import embed_table_storage
from datasets.utils.metadata import MetadataConfigs
from datasets.utils.py_utils import convert_file_size_to_int
from huggingface_hub import DatasetCard, DatasetCardData

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
_SHARD_RE = re.compile(r"^(?P<split>.+)-(?P<index>\d{5})-of-(?P<total>\d{5})\.parquet$")
_NOTES_BEGIN = "<!-- rat7m-build-notes config={config} -->"
_NOTES_END = "<!-- /rat7m-build-notes -->"
_NOTES_BLOCK_RE = re.compile(
    r"<!-- rat7m-build-notes config=(?P<config>[^ ]+) -->\n(?P<text>.*?)<!-- /rat7m-build-notes -->\n?",
    re.S,
)
_NOTES_HEADING = "## Build notes"
_PLACEHOLDER_MARK = "<!-- rat7m-placeholder-card -->"


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


def render_card(metadata: DatasetCardData | dict, body: str, notes_blocks: dict[str, str]) -> str:
    """README text: YAML header, the card body, then a "Build notes" section (one block per config)."""
    data = metadata if isinstance(metadata, DatasetCardData) else DatasetCardData(**metadata)
    text = f"---\n{data.to_yaml()}\n---\n\n{body.strip()}\n"
    if notes_blocks:
        text += f"\n{_NOTES_HEADING}\n\n" + "\n".join(notes_blocks[c] for c in sorted(notes_blocks))
    return text


def _write_text_atomic(path: Path, text: str) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
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

    ``README.md`` is created or merged: the ``configs:`` and ``dataset_info:`` entries of other
    configs are kept, this config's are replaced; the card metadata (pretty_name, licence, task,
    tags, size category) is rewritten; the body is re-read from the card body file (see
    :func:`find_card_body`) followed by per-config "Build notes" (``build_notes`` of this export;
    the notes of other configs are kept).

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
        # Swap the new config folder in; the old one (if any) goes away only after the rename.
        final = to_dir / config_name
        old = None
        if final.exists():
            old = tmp_parent / f"{config_name}.old-{uuid.uuid4().hex[:12]}"
            os.replace(final, old)
        os.replace(tmp_dir, final)
        _write_text_atomic(readme, readme_text)
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
    """The merged README text (``old_text``: the README already there, if any)."""
    if old_text is not None:
        card_data = DatasetCard(old_text).data
        notes_blocks = _existing_notes(old_text)
    else:
        card_data = DatasetCardData()
        notes_blocks = {}
    notes_blocks.pop(config_name, None)  # this config was rebuilt: its old notes are stale
    if build_notes:
        notes_blocks[config_name] = _render_notes_block(config_name, build_notes)

    # Same helpers push_to_hub uses: they merge this config into the existing entries.
    DatasetInfosDict({config_name: info}).to_dataset_card_data(card_data)
    MetadataConfigs(
        {config_name: {"data_files": [{"split": s, "path": f"{config_name}/{s}-*"} for s in splits]}}
    ).to_dataset_card_data(card_data)

    # Size category from the largest config (configs are views of the same recordings, so their
    # row counts are not added up).
    infos = DatasetInfosDict.from_dataset_card_data(card_data)
    largest = max(
        (sum((s.num_examples or 0) for s in i.splits.values()) if i.splits else 0 for i in infos.values()),
        default=0,
    )
    fixed = dict(CARD_METADATA, size_categories=[size_category(largest)])

    merged = {**card_meta_from_body, **card_data.to_dict()}
    merged.update(fixed)
    # Key order of the header: card metadata first, then configs and dataset_info.
    ordered = {k: merged[k] for k in fixed}
    last = ("configs", "dataset_info")
    ordered.update({k: v for k, v in merged.items() if k not in ordered and k not in last})
    ordered["configs"] = merged["configs"]
    ordered["dataset_info"] = merged["dataset_info"]
    ordered = {k: v for k, v in ordered.items() if v is not None}
    return render_card(ordered, body, notes_blocks)


# --------------------------------------------------------------------------------------------- push


def push_folder(
    folder: str | os.PathLike,
    repo_id: str,
    *,
    private: bool = False,
    revision: str | None = None,
    token: str | None = None,
    commit_message: str | None = None,
) -> str:
    """Upload an export folder to the dataset repository ``repo_id``; return the repository URL.

    Creates the repository if needed (``private`` only applies to a new repository) and the branch
    ``revision`` if given, then ``upload_folder``: files whose remote oid already matches are
    skipped, so re-running after an interruption resumes (with ``hf_xet`` installed the upload is
    split into several commits by itself). Remote files under the pushed config folders that the
    folder no longer holds (e.g. shards of a re-export with fewer shards) are deleted in the same
    upload, so a ``<config>/<split>-*`` pattern never matches stale shards.

    The token comes from ``token`` or the standard discovery (``HF_TOKEN``, ``hf auth login``);
    it is never printed or logged here.
    """
    from huggingface_hub import HfApi

    folder = Path(folder)
    if not (folder / "README.md").is_file():
        raise FileNotFoundError(f"{folder} has no README.md: export a config into it first")
    configs = exported_configs(folder)
    api = HfApi(token=token)
    repo_url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
    repo_id = repo_url.repo_id or repo_id
    if revision is not None:
        api.create_branch(repo_id, branch=revision, repo_type="dataset", exist_ok=True)
    api.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        repo_type="dataset",
        revision=revision,
        commit_message=commit_message or f"Upload RAT7M ({', '.join(configs) or 'card'})",
        # Only the export itself: the card and the shards of each config folder.
        allow_patterns=["README.md", *(f"{c}/*.parquet" for c in configs)],
        delete_patterns=[f"{c}/*" for c in configs] or None,
    )
    url = str(repo_url).rstrip("/")
    if revision is not None:
        url += f"/tree/{revision}"
    return url


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
