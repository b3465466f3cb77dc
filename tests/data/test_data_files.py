"""User data files: damaged headers, byte-order marks and complex numbers are refused or read right, in one line."""

import io
import zipfile

import numpy as np
import pytest

from emvi.data import load_dataset
from emvi.errors import DataError


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array)
    return buffer.getvalue()


def test_an_npy_whose_header_claims_more_than_the_file_holds_is_refused_before_allocating(tmp_path):
    path = tmp_path / "big.npy"
    raw = npy_bytes(np.ones((4, 3)))
    header_end = raw.index(b"\n") + 1
    header = raw[:header_end].replace(b"(4, 3)", b"(1000000000000, 3)")
    # keep the header 64-byte aligned as numpy writes it: pad the dict with spaces before the newline
    body = header[10:-1].rstrip()
    length = ((10 + len(body) + 1 + 63) // 64) * 64 - 10
    header = raw[:8] + length.to_bytes(2, "little") + body.ljust(length - 1) + b"\n"
    path.write_bytes(header + raw[header_end:])
    with pytest.raises(DataError, match="claims an array of shape"):
        load_dataset(str(path))


def test_an_npz_member_whose_header_claims_too_much_is_refused(tmp_path):
    path = tmp_path / "big.npz"
    raw = npy_bytes(np.ones((4, 3)))
    header_end = raw.index(b"\n") + 1
    body = raw[10:header_end - 1].replace(b"(4, 3)", b"(1000000000000, 3)").rstrip()
    length = ((10 + len(body) + 1 + 63) // 64) * 64 - 10
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("x.npy", raw[:8] + length.to_bytes(2, "little") + body.ljust(length - 1) + b"\n"
                         + raw[header_end:])
    with pytest.raises(DataError, match="claims an array of shape"):
        load_dataset(str(path))


def test_a_csv_with_a_byte_order_mark_keeps_its_first_row(tmp_path):
    path = tmp_path / "bom.csv"
    rows = np.arange(30 * 2, dtype=float).reshape(30, 2)
    path.write_bytes("\ufeff".encode() + "\n".join(f"{a},{b}" for a, b in rows).encode())
    data = load_dataset(str(path))
    assert len(data) == 30
    np.testing.assert_array_equal(data.x.numpy(), rows.astype(np.float32))


def test_a_csv_with_a_byte_order_mark_and_a_header_reads_the_header(tmp_path):
    path = tmp_path / "bom_header.csv"
    path.write_bytes("\ufeffa,label\n1,0\n2,1\n3,0\n".encode())
    data = load_dataset(str(path), label_column="label")
    assert data.x.shape == (3, 1) and data.y.tolist() == [0, 1, 0]


@pytest.mark.parametrize("suffix", [".npy", ".npz"])
def test_complex_data_is_refused_not_cast(tmp_path, suffix):
    path = tmp_path / f"complex{suffix}"
    values = np.ones((5, 2)) + 1j
    np.save(path, values) if suffix == ".npy" else np.savez(path, x=values)
    with pytest.raises(DataError, match="complex"):
        load_dataset(str(path))


@pytest.mark.parametrize("binarize", ["static", "dynamic"])
def test_binarising_data_outside_the_unit_interval_is_refused(tmp_path, binarize):
    path = tmp_path / "counts.npy"
    np.save(path, np.arange(12, dtype=float).reshape(6, 2))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_dataset(str(path), binarize=binarize)
    np.save(path, np.linspace(0, 1, 12).reshape(6, 2))
    assert load_dataset(str(path), binarize=binarize).binarize == binarize
