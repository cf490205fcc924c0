"""The ``rat7m`` command: demo, prepare, download, export, push, evaluate."""

from __future__ import annotations

import argparse
import os
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


def _add_selection(parser: argparse.ArgumentParser, *, with_config: bool = True) -> None:
    if with_config:
        parser.add_argument("config", help="mocap, cameras, frames, multiview, videos or mini")
        parser.add_argument("--annotation-file", help="mini config: the annotation pickle (default: in --data-dir)")
    parser.add_argument("--data-dir", help="local copy of the release (default: download from figshare)")
    parser.add_argument("--recordings", type=_list_of(str), help="e.g. s1-d1,s5-d1 (default: all available)")
    parser.add_argument("--cameras", type=_list_of(int), help="e.g. 1,2 (default: all six)")
    parser.add_argument("--frame-step", type=int, default=1, help="keep samples whose index is a multiple of this")
    parser.add_argument("--jpeg-quality", type=int, default=90)
    parser.add_argument("--source", choices=("files", "archives"), default="files", help="figshare download mode")
    parser.add_argument(
        "--on-corrupt-video",
        choices=("error", "skip"),
        default="error",
        help="damaged mp4: fail (default), or leave out its damaged frames (counted in a warning and the card)",
    )
    parser.add_argument("--num-proc", type=int, default=None, help="processes for preparing")
    parser.add_argument("--cache-dir", help="datasets cache folder")


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

    from .render import render_multiview
    from .sample import SampleSpec, write_sample

    workdir = args.workdir or tempfile.mkdtemp(prefix="rat7m-demo-")
    data_dir = os.path.join(workdir, "release")
    print(f"Fabricating a miniature RAT7M release (real formats: H.264 mp4 + MATLAB .mat) in {data_dir}")
    release = write_sample(data_dir, SampleSpec())
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


def cmd_download(args) -> None:
    from .download import figshare_index, materialize
    from .manifest import CAMERAS, RECORDINGS

    if not args.dest and not args.dry_run:
        raise ValueError("--dest DIR is required (or --dry-run to only print sizes)")
    # Verified downloads live beside the destination, so materialising them is a hard link, not a copy.
    cache_dir = args.cache_dir or os.path.join(args.dest or tempfile.mkdtemp(prefix="rat7m-"), ".rat7m-downloads")
    index = figshare_index(
        tuple(args.recordings or RECORDINGS),
        tuple(args.cameras or CAMERAS),
        cache_dir=cache_dir,
        need_video=not args.no_video,
        source="files" if args.dry_run else args.source,
        download=not args.dry_run,
    )
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
    config = builder.config
    selection = [
        f"recordings: {', '.join(config.recordings) if config.recordings else 'all available'}",
        f"cameras: {', '.join(map(str, config.cameras)) if config.cameras else 'all'}",
        f"frame_step: {config.frame_step}",
        f"jpeg_quality: {config.jpeg_quality}",
        f"rat7m builder version {builder.VERSION}",
    ]
    return {"selection": selection, **builder.build_notes}


def cmd_export(args) -> None:
    from .hub import export_dataset

    if getattr(args, "engine", "local") == "ray":
        return _export_with_ray(args)
    if getattr(args, "ray_address", None):
        raise ValueError("--ray-address needs --engine ray")
    builder = _prepared_builder(args)
    export_dataset(
        builder.as_dataset(), args.config, args.to, max_shard_size=args.max_shard_size, build_notes=_notes(builder)
    )
    print(f"Exported {args.config!r} to {os.path.abspath(args.to)}")
    print(f'Load it with: datasets.load_dataset("{os.path.abspath(args.to)}", "{args.config}")')


def _export_with_ray(args) -> None:
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
    print(f'Load it with: datasets.load_dataset("{where}", "{args.config}")')


def cmd_push(args) -> None:
    from .hub import export_dataset, load_line, push_folder

    folder = args.workdir or tempfile.mkdtemp(prefix="rat7m-push-")
    builder = _prepared_builder(args)
    export_dataset(
        builder.as_dataset(), args.config, folder, max_shard_size=args.max_shard_size, build_notes=_notes(builder)
    )
    url = push_folder(folder, args.repo_id, private=args.private, revision=args.revision)
    print(f"Pushed {args.config!r} to {url}")
    print(f"Load it with: {load_line(args.repo_id, args.config)}")


def cmd_evaluate(args) -> None:
    from .evaluation import evaluate_file

    print(evaluate_file(args.predictions, args))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rat7m", description="The RAT7M rat pose dataset for Hugging Face datasets.")
    commands = parser.add_subparsers(dest="command", required=True)

    demo = commands.add_parser("demo", help="fabricate a miniature release, build frames + multiview, draw one")
    demo.add_argument("--workdir", help="where to write the sample and cache (default: a new temporary folder)")
    demo.add_argument("--out", default="rat7m-demo.png", help="picture of one multiview sample")
    demo.set_defaults(run=cmd_demo)

    prepare = commands.add_parser("prepare", help="build (download if needed) and cache a config")
    _add_selection(prepare)
    prepare.set_defaults(run=cmd_prepare)

    download = commands.add_parser("download", help="download raw release files into the helper-script layout")
    _add_selection(download, with_config=False)
    download.add_argument("--dest", help="folder to fill (video_sequences/, annotations/); needed unless --dry-run")
    download.add_argument("--no-video", action="store_true", help="only the motion-capture .mat files")
    download.add_argument(
        "--dry-run",
        action="store_true",
        help="print the files and bytes per recording (from the listings), fetch nothing",
    )
    download.set_defaults(run=cmd_download)

    export = commands.add_parser("export", help="write a config as Hub-layout Parquet shards + dataset card")
    _add_selection(export)
    export.add_argument("--to", required=True, help="output folder (with --engine ray: or an fsspec URL, s3://…)")
    export.add_argument("--max-shard-size", default="500MB", help="local engine: shard size (Ray: one per chunk)")
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

    push = commands.add_parser("push", help="export a config and upload it to the Hugging Face Hub")
    _add_selection(push)
    push.add_argument("--repo-id", required=True, help="ORG/NAME")
    push.add_argument("--private", action="store_true")
    push.add_argument("--revision", help="branch to push to")
    push.add_argument("--max-shard-size", default="500MB")
    push.add_argument("--workdir", help="export folder (default: a new temporary folder)")
    push.set_defaults(run=cmd_push)

    evaluate = commands.add_parser("evaluate", help="MPJPE, PA-MPJPE and N-MPJPE of 3D predictions")
    evaluate.add_argument("predictions", help=".npy (N×20×3) or .csv (N×60) in mm, rows in dataset order")
    evaluate.add_argument("--split", default="test")
    evaluate.add_argument("--config", default="mini", choices=("mini", "mocap"), help="what the rows follow")
    evaluate.add_argument("--annotation-file", help="mini-RAT7M annotation pickle (default: found in --data-dir)")
    _add_selection(evaluate, with_config=False)
    evaluate.set_defaults(run=cmd_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.run(args)
    except (Rat7MError, ValueError) as error:
        print(f"rat7m {args.command}: error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
