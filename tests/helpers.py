"""Helpers shared by the tests (imported as a plain module: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import io
import struct
import zipfile

import av
import datasets
import numpy as np
import scipy.io
from PIL import Image as PILImage


def raw_images(dataset, column: str = "image"):
    """The dataset with its image column(s) left as stored bytes (no decoding)."""
    feature = dataset.features[column]
    if isinstance(feature, datasets.List):
        return dataset.cast_column(column, datasets.List(datasets.Image(decode=False)))
    return dataset.cast_column(column, datasets.Image(decode=False))


def decode_jpeg(jpeg: bytes) -> np.ndarray:
    return np.asarray(PILImage.open(io.BytesIO(jpeg)).convert("RGB"))


def assert_same_rows(rows_a, rows_b) -> None:
    """Row lists equal value for value, NaN equal to NaN (plain ``==`` says NaN ≠ NaN)."""
    rows_a, rows_b = list(rows_a), list(rows_b)
    assert len(rows_a) == len(rows_b), f"{len(rows_a)} rows ≠ {len(rows_b)} rows"
    for index, (a, b) in enumerate(zip(rows_a, rows_b, strict=True)):
        np.testing.assert_equal(a, b, err_msg=f"row {index} differs")


def assert_same_table(table_a, table_b) -> None:
    """Arrow tables with the same schema and values, NaN equal to NaN (``Table.equals`` says NaN ≠ NaN).

    Chunking may differ; floats are compared bit for bit through their flattened values (lists and
    fixed-size lists of any depth).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    assert table_a.schema == table_b.schema, f"{table_a.schema} ≠ {table_b.schema}"
    assert table_a.num_rows == table_b.num_rows, f"{table_a.num_rows} rows ≠ {table_b.num_rows} rows"
    for name in table_a.column_names:
        column_a, column_b = table_a[name].combine_chunks(), table_b[name].combine_chunks()
        while pa.types.is_fixed_size_list(column_a.type) or pa.types.is_list(column_a.type):
            # (the list offsets are compared first, so flattening hides no difference in shape)
            if pa.types.is_list(column_a.type):
                assert column_a.offsets.equals(column_b.offsets), f"column {name!r} differs in list lengths"
            assert column_a.null_count == column_b.null_count, f"column {name!r} differs in nulls"
            column_a, column_b = pc.list_flatten(column_a), pc.list_flatten(column_b)
        if pa.types.is_floating(column_a.type):
            values_a, values_b = column_a.to_numpy(zero_copy_only=False), column_b.to_numpy(zero_copy_only=False)
            assert values_a.tobytes() == values_b.tobytes(), f"column {name!r} differs"
        else:
            assert column_a.equals(column_b), f"column {name!r} differs"


#: How every `MocapFormatError` message ends.
MAT_FIX = "Re-download this file from the figshare record (article 13739233) or fix the copy."


def load_mat(path: str) -> dict:
    """A .mat's variables as plain dicts and arrays (``simplify_cells``), without scipy's ``__`` keys."""
    variables = scipy.io.loadmat(path, simplify_cells=True)
    return {key: value for key, value in variables.items() if not key.startswith("__")}


def save_mat(path: str, variables: dict) -> None:
    """Write variables as a MATLAB v5 file, vectors as rows, as the release's files are."""
    scipy.io.savemat(path, variables, format="5", oned_as="row")


def remux(data: bytes, folder, movflags: str = "faststart") -> bytes:
    """The same video packets in a new mp4 written with ``movflags``, e.g. ``"faststart"`` (index
    first, as streaming-friendly files are) or ``"frag_keyframe+empty_moov"`` (fragmented). Goes
    through a real file in ``folder``: faststart moves the index in a second pass over it."""
    path = str(folder / f"remuxed-{movflags}.mp4")
    with av.open(io.BytesIO(data)) as source, av.open(path, "w", format="mp4", options={"movflags": movflags}) as out:
        stream = out.add_stream_from_template(source.streams.video[0])
        for packet in source.demux(source.streams.video[0]):
            if packet.dts is not None:
                packet.stream = stream
                out.mux(packet)
    with open(path, "rb") as file:
        return file.read()


#: Where each patchable zip header field sits: (offset in the central directory entry, offset in the
#: local header, struct format). See the zip specification (APPNOTE.TXT, sections 4.3.7 and 4.3.12).
ZIP_HEADER_FIELDS = {
    "signature": (0, 0, "<I"),
    "flag_bits": (8, 6, "<H"),
    "compress_type": (10, 8, "<H"),
    "crc": (16, 14, "<I"),
    "compress_size": (20, 18, "<I"),
    "file_size": (24, 22, "<I"),
}


def patch_zip_member(zip_path: str, member: str, *, local_only: bool = False, **fields: int) -> None:
    """Overwrite header fields (`ZIP_HEADER_FIELDS`) of ``member`` in its local header and (unless
    ``local_only``) its central directory entry: how a damaged or hand-made zip looks."""
    with zipfile.ZipFile(zip_path) as archive:
        local = archive.getinfo(member).header_offset
    with open(zip_path, "rb") as file:
        data = bytearray(file.read())
    central = data.find(b"PK\x01\x02")
    while True:
        assert central != -1, f"{member} not in the central directory"
        name_length, extra_length, comment_length = struct.unpack_from("<HHH", data, central + 28)
        if data[central + 46 : central + 46 + name_length] == member.encode():
            break
        central = data.find(b"PK\x01\x02", central + 46 + name_length + extra_length + comment_length)
    for name, value in fields.items():
        in_central, in_local, layout = ZIP_HEADER_FIELDS[name]
        struct.pack_into(layout, data, local + in_local, value)
        if not local_only:
            struct.pack_into(layout, data, central + in_central, value)
    with open(zip_path, "wb") as file:
        file.write(data)
