"""The ``rat7m`` command: demo, prepare, download, export, push, evaluate."""

from __future__ import annotations

import argparse
import os
import re
import shutil
import sys
import tempfile

from .errors import Rat7MError


def _list_of(kind):
    def parse(text: str):
        items = [item for item in text.replace(",", " ").split() if item]
        try:
            return [kind(item) for item in items]
        except ValueError as error:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from error

    return parse


def _add_recordings(parser) -> argparse.Action:
    return parser.add_argument("--recordings", type=_list_of(str), help="e.g. s1-d1,s5-d1 (default: all available)")


def _add_cameras(parser) -> argparse.Action:
    return parser.add_argument("--cameras", type=_list_of(int), help="e.g. 1,2 (default: all six)")


def _add_source(parser) -> argparse.Action:
    return parser.add_argument(
        "--source",
        choices=("files", "archives"),
        default="files",
        help="figshare download: only the needed files (default), or whole article zips",
    )


def _add_build_options(
    parser: argparse.ArgumentParser, *, config_help: str, config_optional: bool = False
) -> tuple[argparse._ArgumentGroup, list[argparse.Action]]:
    """The config and the options of a build (prepare, export, push): their group and actions."""
    parser.add_argument("config", nargs="?" if config_optional else None, help=config_help)
    group = parser.add_argument_group("building the config")
    return group, [
        group.add_argument("--data-dir", help="local copy of the release (default: download from figshare)"),
        group.add_argument("--annotation-file", help="mini config: the annotation pickle (default: in --data-dir)"),
        _add_recordings(group),
        _add_cameras(group),
        group.add_argument(
            "--frame-step", type=int, default=1, help="keep samples whose index is a multiple of this (default: 1)"
        ),
        group.add_argument(
            "--jpeg-quality", type=int, default=90, help="JPEG quality of the pictures, 1–100 (default: 90)"
        ),
        _add_source(group),
        group.add_argument(
            "--on-corrupt-video",
            choices=("error", "skip"),
            default="error",
            help="damaged mp4: fail (default), or leave out its damaged frames (counted in a warning and the card)",
        ),
        group.add_argument("--num-proc", type=int, default=None, help="processes for preparing"),
        group.add_argument("--cache-dir", help="datasets cache folder"),
    ]


def _config_kwargs(args) -> dict:
    kwargs = {"frame_step": args.frame_step, "jpeg_quality": args.jpeg_quality, "source": args.source}
    if getattr(args, "on_corrupt_video", "error") != "error":
        kwargs["on_corrupt_video"] = args.on_corrupt_video
    if getattr(args, "annotation_file", None):
        kwargs["annotation_file"] = args.annotation_file
    if args.recordings:
        kwargs["recordings"] = args.recordings
    if args.cameras:
        kwargs["cameras"] = args.cameras
    return kwargs


def _prepared_builder(args):
    import rat7m

    builder = rat7m.Rat7M(
        config_name=args.config, data_dir=args.data_dir, cache_dir=args.cache_dir, **_config_kwargs(args)
    )
    rat7m.prepare(builder, num_proc=args.num_proc)
    return builder


def _summary(name: str, dataset_dict) -> list[str]:
    lines = []
    for split, dataset in dataset_dict.items():
        lines.append(f"  {name:<10} {split:<5} {dataset.num_rows:>7} rows  columns: {', '.join(dataset.column_names)}")
    return lines


def cmd_prepare(args) -> None:
    builder = _prepared_builder(args)
    print("\n".join(_summary(args.config, builder.as_dataset())))
    print(f"cached in {builder.cache_dir}")


def cmd_demo(args) -> None:
    import numpy as np

    import rat7m

    from .annotation import ANNOTATION_FILE_NAMES
    from .render import render_multiview
    from .sample import SampleSpec, write_mini_annotation, write_sample

    workdir = args.workdir or tempfile.mkdtemp(prefix="rat7m-demo-")
    data_dir = os.path.join(workdir, "release")
    print(f"Fabricating a miniature RAT7M release (real formats: H.264 mp4 + MATLAB .mat) in {data_dir}")
    release = write_sample(data_dir, SampleSpec())
    # and a fabricated mini-RAT7M annotation beside it, so that `mini` can be tried offline too
    write_mini_annotation(release, os.path.join(data_dir, ANNOTATION_FILE_NAMES[0]))
    cache_dir = os.path.join(workdir, "cache")
    lines = []
    built = {}
    for config in ("frames", "multiview"):
        print(f"Building config {config!r}")
        built[config] = rat7m.load_dataset(config, data_dir=data_dir, cache_dir=cache_dir)
        lines += _summary(config, built[config])
    example = built["multiview"]["train"][0]
    keypoints_2d = np.asarray(example["keypoints_2d"])
    frame = built["frames"]["train"][0]
    print("Summary:")
    print("\n".join(lines))
    print(
        f"  frames: image {frame['image'].size[0]}×{frame['image'].size[1]} px JPEG, keypoints_3d "
        f"{np.asarray(frame['keypoints_3d']).shape} mm, keypoints_2d {np.asarray(frame['keypoints_2d']).shape} px"
    )
    print(f"  multiview: {len(example['images'])} views, keypoints_2d {keypoints_2d.shape} px")
    print(f"  recordings: {', '.join(release.recordings)}")
    render_multiview(example).save(args.out)
    print(f"Wrote {os.path.abspath(args.out)}: sample {example['sample_index']} of {example['recording']}, all cameras")
    print(
        f"The fabricated release stays in {data_dir} (with a mini annotation): give it as data_dir to try any "
        f"config or command, e.g. rat7m.load_dataset('mocap', data_dir={data_dir!r})."
    )


def cmd_download(args) -> None:
    from .download import figshare_index, materialize
    from .manifest import CAMERAS, RECORDINGS

    if not args.dest and not args.dry_run:
        raise ValueError("--dest DIR is required (or --dry-run to only print sizes)")
    # Verified downloads live beside the destination, so materialising them is a hard link, not a copy.
    # A dry run without --dest keeps its listings in a temporary folder, deleted afterwards.
    scratch = None
    if args.cache_dir:
        cache_dir = args.cache_dir
    elif args.dest:
        cache_dir = os.path.join(args.dest, ".rat7m-downloads")
    else:
        scratch = tempfile.mkdtemp(prefix="rat7m-")
        cache_dir = os.path.join(scratch, ".rat7m-downloads")
    try:
        index = figshare_index(
            tuple(args.recordings or RECORDINGS),
            tuple(args.cameras or CAMERAS),
            cache_dir=cache_dir,
            need_video=not args.no_video,
            source="files" if args.dry_run else args.source,
            download=not args.dry_run,
        )
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if args.dry_run:
        print(size_table(index))
        return
    materialize(index, args.dest)
    print(f"Release files in {os.path.abspath(args.dest)} (use it as --data-dir / data_dir=)")


def size_table(index) -> str:
    """Files and bytes per recording of an index (sizes from figshare's listings)."""
    totals: dict[str, list[int]] = {}
    for recording, ref in index.mocap.items():
        totals.setdefault(recording, [0, 0])
        totals[recording][0] += 1
        totals[recording][1] += ref.size or 0
    for (recording, _camera), chunks in index.videos.items():
        totals.setdefault(recording, [0, 0])
        totals[recording][0] += len(chunks)
        totals[recording][1] += sum(chunk.file.size or 0 for chunk in chunks)
    lines = [f"{'recording':<10} {'files':>6} {'GB':>9}"]
    for recording in sorted(totals):
        files, size = totals[recording]
        lines.append(f"{recording:<10} {files:>6} {size / 1e9:>9.2f}")
    files = sum(count for count, _ in totals.values())
    size = sum(size for _, size in totals.values())
    lines.append(f"{'total':<10} {files:>6} {size / 1e9:>9.2f}")
    return "\n".join(lines)


def _notes(builder) -> dict:
    """Build notes for the dataset card: the selection, and whatever the build found."""
    import rat7m

    config = builder.config
    options = rat7m.CONFIG_OPTIONS[config.name]  # only what this config's examples depend on
    selection = [
        f"recordings: {', '.join(config.recordings) if config.recordings else 'all available'}",
        f"cameras: {', '.join(map(str, config.cameras)) if config.cameras else 'all'}",
    ]
    if "frame_step" in options:
        selection.append(f"frame_step: {config.frame_step}")
    if "jpeg_quality" in options:
        selection.append(f"jpeg_quality: {config.jpeg_quality}")
    if "on_corrupt_video" in options:
        selection.append(f"on_corrupt_video: {config.on_corrupt_video}")
    if config.name == "mini" and config.annotation_file:
        selection.append(f"annotation: {os.path.basename(config.annotation_file)}")
    if config.data_dir:
        selection.append("files: a local copy (data_dir), used as found (not checked against figshare's md5)")
    else:
        selection.append("files: downloaded from figshare, each verified against its md5 checksum")
    selection.append(f"rat7m builder version {builder.VERSION}")
    return {"selection": selection, **builder.build_notes}


def cmd_export(args) -> None:
    from .hub import export_dataset, load_line

    if getattr(args, "engine", "local") == "ray":
        return _export_with_ray(args)
    if getattr(args, "ray_address", None):
        raise ValueError("--ray-address needs --engine ray")
    builder = _prepared_builder(args)
    export_dataset(
        builder.as_dataset(), args.config, args.to, max_shard_size=args.max_shard_size, build_notes=_notes(builder)
    )
    print(f"Exported {args.config!r} to {os.path.abspath(args.to)}")
    print(f"Load it with: {load_line(os.path.abspath(args.to), args.config)}")


def _export_with_ray(args) -> None:
    from .hub import load_line
    from .ray_export import INSTALL_HINT, export_with_ray, ray_available

    if not ray_available():
        raise Rat7MError(INSTALL_HINT)
    import rat7m

    builder = rat7m.Rat7M(
        config_name=args.config, data_dir=args.data_dir, cache_dir=args.cache_dir, **_config_kwargs(args)
    )
    result = export_with_ray(builder, args.to, ray_address=args.ray_address, num_cpus=args.num_proc)
    where = args.to if "://" in args.to else os.path.abspath(args.to)
    print(
        f"Exported {args.config!r} to {where} on Ray: {result['num_examples']} rows in {len(result['files'])} "
        f"shards ({result['tasks_run']} written now, {result['shards_skipped']} already there)"
    )
    print(f"Load it with: {load_line(where, args.config)}")


def cmd_push(args) -> None:
    from .hub import export_dataset, exported_configs, load_line, push_folder

    if args.from_dir:
        given = [a.option_strings[0] for a in args.build_actions if getattr(args, a.dest) != a.default]
        if given:
            raise ValueError(
                f"--from uploads an existing export as it is: {', '.join(given)} only apply when push builds "
                "the config (leave out --from)"
            )
        if not os.path.isfile(os.path.join(args.from_dir, "README.md")):
            raise ValueError(f"--from {args.from_dir}: not an export folder (no README.md); run `rat7m export` first")
        configs = [args.config] if args.config else exported_configs(args.from_dir)
        url = push_folder(args.from_dir, args.repo_id, configs=configs, private=args.private, revision=args.revision)
    else:
        if not args.config:
            raise ValueError("name the config to build and push, or give --from DIR to push an existing export")
        configs = [args.config]
        # The export lives only for the upload unless --workdir names a folder to keep.
        folder = args.workdir or tempfile.mkdtemp(prefix="rat7m-push-")
        try:
            builder = _prepared_builder(args)
            export_dataset(
                builder.as_dataset(),
                args.config,
                folder,
                max_shard_size=args.max_shard_size,
                build_notes=_notes(builder),
            )
            url = push_folder(folder, args.repo_id, configs=configs, private=args.private, revision=args.revision)
        finally:
            if not args.workdir:
                shutil.rmtree(folder, ignore_errors=True)
    revision = None if args.revision in (None, "main") else args.revision
    print(f"Pushed {', '.join(map(repr, configs))} to {url}")
    for config in configs:
        print(f"Load it with: {load_line(args.repo_id, config, revision)}")


def cmd_evaluate(args) -> None:
    from .evaluation import evaluate_file

    print(evaluate_file(args.predictions, args))


CONFIG_HELP = "mocap, cameras, frames, multiview, videos or mini"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rat7m", description="The RAT7M rat pose dataset for Hugging Face datasets.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fabricate a miniature release, build frames + multiview, draw one")
    demo.add_argument("--workdir", help="where to write the sample and cache (default: a new temporary folder)")
    demo.add_argument(
        "--out", default="rat7m-demo.png", help="picture of one multiview sample (default: rat7m-demo.png)"
    )
    demo.set_defaults(run=cmd_demo)

    prepare = commands.add_parser("prepare", help="build (download if needed) and cache a config")
    _add_build_options(prepare, config_help=CONFIG_HELP)
    prepare.set_defaults(run=cmd_prepare)

    download = commands.add_parser("download", help="download raw release files into the helper-script layout")
    download.add_argument("--dest", help="folder to fill (video_sequences/, annotations/); needed unless --dry-run")
    _add_recordings(download)
    _add_cameras(download)
    _add_source(download)
    download.add_argument("--no-video", action="store_true", help="only the motion-capture .mat files")
    download.add_argument(
        "--cache-dir", help="where verified downloads and listings are kept (default: DEST/.rat7m-downloads)"
    )
    download.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files and bytes per recording (from the listings), fetch nothing",
    )
    download.set_defaults(run=cmd_download)

    export = commands.add_parser("export", help="write a config as Hub-layout Parquet shards + dataset card")
    _add_build_options(export, config_help=CONFIG_HELP)
    export.add_argument("--to", required=True, help="output folder (with --engine ray: or an fsspec URL, s3://…)")
    export.add_argument(
        "--max-shard-size", default="500MB", help="local engine: shard size (default: 500MB; Ray: one per chunk)"
    )
    export.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local: prepare here, then write; ray: one Ray task per shard (needs the `ray` extra)",
    )
    export.add_argument(
        "--ray-address", help="with --engine ray: a running Ray cluster (e.g. ray://head:10001); default: local Ray"
    )
    export.set_defaults(run=cmd_export)

    push = commands.add_parser(
        "push",
        help="upload a config to the Hugging Face Hub (built and exported now, or --from an export folder)",
        description="Upload configs to a dataset repository on the Hub. The card on the Hub is merged: other "
        "configs already there stay loadable; the pushed config's entries and files are replaced.",
    )
    push.add_argument("--repo-id", required=True, help="ORG/NAME")
    push.add_argument("--private", action="store_true", help="make a new repository private")
    push.add_argument("--revision", help="branch to push to (created if missing; default: main)")
    where = push.add_mutually_exclusive_group()
    where.add_argument(
        "--from",
        dest="from_dir",
        metavar="DIR",
        help="upload the config (default: every config) already exported in DIR; nothing is built",
    )
    where.add_argument(
        "--workdir",
        help="export into this folder and keep it (default: a temporary folder, deleted after the upload)",
    )
    build, build_actions = _add_build_options(
        push, config_help=f"{CONFIG_HELP}: the config to build and push (with --from: to push)", config_optional=True
    )
    build_actions.append(
        build.add_argument("--max-shard-size", default="500MB", help="shard size of the export (default: 500MB)")
    )
    push.set_defaults(run=cmd_push, build_actions=build_actions)

    evaluate = commands.add_parser("evaluate", help="MPJPE, PA-MPJPE and N-MPJPE of 3D predictions")
    evaluate.add_argument("predictions", help=".npy (N×20×3) or .csv (N×60) in mm, rows in dataset order")
    evaluate.add_argument(
        "--split", default="test", choices=("train", "test"), help="the split the predictions follow (default: test)"
    )
    evaluate.add_argument("--config", default="mini", choices=("mini", "mocap"), help="what the rows follow")
    evaluate.add_argument("--data-dir", help="local copy of the release (default: download from figshare)")
    evaluate.add_argument("--annotation-file", help="mini-RAT7M annotation pickle (default: found in --data-dir)")
    _add_recordings(evaluate)
    evaluate.add_argument(
        "--frame-step",
        type=int,
        default=1,
        help="score samples whose index is a multiple of this, as the predictions were made (default: 1)",
    )
    evaluate.add_argument("--cache-dir", help="datasets cache folder (--config mocap)")
    evaluate.set_defaults(run=cmd_evaluate)
    return parser


#: A keyword in an error message (written for Python callers: ``cameras=[...]``) and its option here.
_KEYWORD_IN_MESSAGE = re.compile(
    r"\b(recordings|cameras|frame_step|jpeg_quality|annotation_file|on_corrupt_video|source)=(\[\.\.\.\]|'[^']*'|\S+)"
)


def _with_options(message: str) -> str:
    """``message`` with each config keyword it suggests followed by the command-line option that sets it."""

    def option(match: re.Match) -> str:
        return f"{match.group(0)} ({'--' + match.group(1).replace('_', '-')} on the command line)"

    return _KEYWORD_IN_MESSAGE.sub(option, message)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (Rat7MError, ValueError) as error:
        print(f"rat7m {args.command}: error: {_with_options(str(error))}", file=sys.stderr)
        return 1
    except Exception as error:
        from huggingface_hub.errors import HfHubHTTPError

        if not isinstance(error, HfHubHTTPError):
            raise
        # The Hub refused (authentication, permissions, a moved branch…): one line, never the token.
        print(f"rat7m {args.command}: error: {' '.join(str(error).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
