"""Fashion-MNIST acquisition (directory, Debian package, loopback download), verification and loading."""

from __future__ import annotations

import gzip
import hashlib
import shutil

import pytest
import torch

from helpers import DEBIAN_DIR, FILE_NAMES, base_params, closed_port_url, copy_debian_files, fashion, serve_directory
from pipeline_lib.data import datasets
from pipeline_lib.runtime.errors import DataError
from pipeline_lib.params import dataset

SMALL = "t10k-labels-idx1-ubyte.gz"  # 5 kB: the cheapest file to corrupt


@pytest.fixture(scope="module")
def local_copy(tmp_path_factory):
    """One copy of the Debian files shared by the module; tests never modify it."""
    return copy_debian_files(tmp_path_factory.mktemp("fmnist-src"))


def _payload_md5(path) -> str:
    with gzip.open(path, "rb") as fh:
        return hashlib.md5(fh.read()).hexdigest()


def _assert_verified_copy(out_dir):
    for name in FILE_NAMES:
        assert (out_dir / name).is_file()
        # independent check: the decompressed payload is byte-identical to the Debian package's
        assert _payload_md5(out_dir / name) == _payload_md5(DEBIAN_DIR / name)
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(FILE_NAMES)  # no temporaries left


# --- sources ---------------------------------------------------------------------------------------------

def test_acquire_from_configured_directory(tmp_path, local_copy):
    out = tmp_path / "raw"
    source = datasets.acquire(out, str(local_copy), allow_download=False, debian_dir=tmp_path / "no-debian")
    assert str(local_copy) in source and "directory" in source
    _assert_verified_copy(out)


def test_acquire_from_debian_location(tmp_path):
    out = tmp_path / "raw"
    source = datasets.acquire(out, None, allow_download=False, debian_dir=DEBIAN_DIR)
    assert "Debian" in source and str(DEBIAN_DIR) in source
    _assert_verified_copy(out)


def test_acquire_downloads_from_loopback_mirror(tmp_path, local_copy):
    empty = tmp_path / "empty-debian"
    empty.mkdir()
    out = tmp_path / "raw"
    with serve_directory(local_copy) as url:
        source = datasets.acquire(out, None, allow_download=True, mirrors=[url], debian_dir=empty)
    assert url in source and "download" in source
    _assert_verified_copy(out)


def test_acquire_falls_back_to_the_next_mirror(tmp_path, local_copy):
    empty = tmp_path / "empty-debian"
    empty.mkdir()
    out = tmp_path / "raw"
    dead = closed_port_url()
    with serve_directory(local_copy) as url:
        source = datasets.acquire(out, None, allow_download=True, mirrors=[dead, url], debian_dir=empty)
    assert url in source and dead not in source
    _assert_verified_copy(out)


def test_acquire_all_mirrors_failing(tmp_path):
    empty = tmp_path / "empty-debian"
    empty.mkdir()
    dead1, dead2 = closed_port_url(), closed_port_url()
    out = tmp_path / "raw"
    with pytest.raises(DataError) as info:
        datasets.acquire(out, None, allow_download=True, mirrors=[dead1, dead2], debian_dir=empty)
    assert dead1 in str(info.value) and dead2 in str(info.value)
    assert not out.exists() or not any(out.iterdir())


def test_acquire_served_mirror_missing_files(tmp_path, local_copy):
    """A mirror that answers 404 is a failed download (DataError), not a crash."""
    partial = copy_debian_files(tmp_path / "partial", [SMALL])
    empty = tmp_path / "empty-debian"
    empty.mkdir()
    out = tmp_path / "raw"
    with serve_directory(partial) as url, pytest.raises(DataError, match="404"):
        datasets.acquire(out, None, allow_download=True, mirrors=[url], debian_dir=empty)
    assert list(out.iterdir()) == []  # the failed transfer left no partial file


# --- corruption ----------------------------------------------------------------------------------------

def _corrupt_root(tmp_path, local_copy, how: str):
    root = tmp_path / "root"
    shutil.copytree(local_copy, root)
    data = bytearray((root / SMALL).read_bytes())
    if how == "truncate":
        data = data[: len(data) // 2]
    elif how == "flip-trailer":       # the gzip CRC32 at the end
        data[-6] ^= 0xFF
    elif how == "flip-middle":
        data[len(data) // 2] ^= 0xFF
    elif how == "flip-deflate-head":  # early in the deflate stream: an invalid code for zlib
        data[100] ^= 0xFF
    else:
        raise AssertionError(how)
    (root / SMALL).write_bytes(bytes(data))
    return root


@pytest.mark.parametrize(
    "how",
    [
        "truncate",
        "flip-trailer",
        "flip-middle",
        "flip-deflate-head",
    ],
)
def test_corrupt_file_raises_checksum_mismatch_and_leaves_nothing(tmp_path, local_copy, how):
    root = _corrupt_root(tmp_path, local_copy, how)
    out = tmp_path / "raw"
    with pytest.raises(DataError) as info:
        datasets.acquire(out, str(root), allow_download=False, debian_dir=tmp_path / "none")
    assert "checksum mismatch" in str(info.value)
    assert SMALL in str(info.value)
    assert not (out / SMALL).exists()
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_corrupt_download_is_rejected(tmp_path, local_copy):
    root = _corrupt_root(tmp_path, local_copy, "truncate")
    empty = tmp_path / "empty-debian"
    empty.mkdir()
    out = tmp_path / "raw"
    with serve_directory(root) as url, pytest.raises(DataError) as info:
        datasets.acquire(out, None, allow_download=True, mirrors=[url], debian_dir=empty)
    assert "checksum mismatch" in str(info.value) and url in str(info.value)
    assert not (out / SMALL).exists()


def test_verify_reports_which_checksum_matched(tmp_path, local_copy):
    # Debian's copies are re-compressed: their .gz md5 differs from the official one, the payload matches
    gz_md5, payload_md5 = datasets.FILES[SMALL]
    assert hashlib.md5((local_copy / SMALL).read_bytes()).hexdigest() != gz_md5
    assert datasets.verify(local_copy / SMALL, gz_md5, payload_md5) == "payload"
    # a file whose .gz md5 is the expected one is accepted on that alone
    own_md5 = hashlib.md5((local_copy / SMALL).read_bytes()).hexdigest()
    assert datasets.verify(local_copy / SMALL, own_md5, "0" * 32) == "gz"
    with pytest.raises(DataError, match="checksum mismatch"):
        datasets.verify(local_copy / SMALL, gz_md5, "0" * 32)


# --- missing data -------------------------------------------------------------------------------------------

def test_missing_files_in_root_are_named(tmp_path):
    present = FILE_NAMES[:2]
    missing = FILE_NAMES[2:]
    root = copy_debian_files(tmp_path / "root", present)
    with pytest.raises(DataError) as info:
        datasets.acquire(tmp_path / "raw", str(root), allow_download=True, debian_dir=DEBIAN_DIR)
    msg = str(info.value)
    assert "data.root" in msg
    for name in missing:
        assert name in msg
    for name in present:
        assert name not in msg


def test_nothing_local_and_download_disabled(tmp_path):
    empty = tmp_path / "empty-debian"
    empty.mkdir()
    with pytest.raises(DataError) as info:
        datasets.acquire(tmp_path / "raw", None, allow_download=False, debian_dir=empty)
    msg = str(info.value)
    assert "no Fashion-MNIST found" in msg
    assert "data.root" in msg and "data.download" in msg and str(empty) in msg
    assert not (tmp_path / "raw").exists()


def test_incomplete_debian_dir_with_download_disabled(tmp_path):
    partial = copy_debian_files(tmp_path / "partial", [SMALL])
    with pytest.raises(DataError, match="no Fashion-MNIST found"):
        datasets.acquire(tmp_path / "raw", None, allow_download=False, debian_dir=partial)


def test_load_split_missing_file(tmp_path):
    copy_debian_files(tmp_path, ["t10k-images-idx3-ubyte.gz"])
    with pytest.raises(DataError, match="t10k-labels-idx1-ubyte.gz"):
        datasets.load_split(tmp_path, train=False)


# --- loading ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("train, n", [(True, 60000), (False, 10000)])
def test_load_split_sizes_and_labels(train, n):
    images, labels = fashion(train)
    assert images.shape == (n, 28, 28) and images.dtype == torch.uint8
    assert labels.shape == (n,) and labels.dtype == torch.int64
    assert int(labels.min()) == 0 and int(labels.max()) == 9
    counts = torch.bincount(labels, minlength=10)
    assert len(counts) == 10 and (counts == n // 10).all()  # Fashion-MNIST is balanced
    assert int(images.max()) > 200 and int(images.min()) == 0


def test_load_split_matches_raw_idx_payload():
    images, labels = fashion(False)
    with gzip.open(DEBIAN_DIR / "t10k-labels-idx1-ubyte.gz", "rb") as fh:
        raw = fh.read()
    assert int.from_bytes(raw[4:8], "big") == len(labels)
    assert bytes(labels.to(torch.uint8).tolist()) == raw[8:]
    with gzip.open(DEBIAN_DIR / "t10k-images-idx3-ubyte.gz", "rb") as fh:
        head = fh.read(16 + 28 * 28)
    assert bytes(images[0].flatten().tolist()) == head[16:]


# --- codec -----------------------------------------------------------------------------------------------------

def test_codec_round_trip_is_exact():
    params = base_params()
    codec = dataset.codec(params)
    real, _ = fashion(False)
    every_value = torch.arange(256, dtype=torch.uint8).repeat(4)[: 28 * 28].view(1, 28, 28)
    images = torch.cat([real[:64], every_value])
    x = codec.encode(images)
    size = params["data"]["image_size"]
    assert x.shape == (len(images), 1, size, size) and x.dtype == torch.float32
    pad = (size - 28) // 2
    back = codec.to_uint8(x)
    assert back.dtype == torch.uint8 and back.shape == x.shape
    assert torch.equal(back[:, 0, pad: pad + 28, pad: pad + 28], images)
    border = torch.ones(size, size, dtype=torch.bool)
    border[pad: pad + 28, pad: pad + 28] = False
    assert (back[:, 0][:, border] == 0).all()


def test_codec_normalisation():
    params = base_params()
    mean, std = params["data"]["mean"], params["data"]["std"]
    codec = dataset.codec(params)
    images = torch.tensor([[[0, 255] * 14] * 28], dtype=torch.uint8)
    x = codec.encode(images)
    assert torch.allclose(x.min(), torch.tensor((0.0 - mean) / std))
    assert torch.allclose(x.max(), torch.tensor((1.0 - mean) / std))
    unit = codec.to_unit(x)
    assert float(unit.min()) == 0.0 and float(unit.max()) == pytest.approx(1.0, abs=1e-6)
    # the padded images of the training set are close to zero mean, unit variance
    real, _ = fashion(True)
    z = codec.encode(real[:5000])
    assert abs(float(z.mean())) < 0.05 and abs(float(z.std()) - 1.0) < 0.05
