"""The invisible watermark (data/watermark.py), the provenance checker and C2PA credentials (data/provenance.py).

References independent of the code under test: invisible-watermark's own decoder (its cv2 colour conversion,
its hard per-block votes) for the bits, the payload's bytes for what must be read, PIL's JPEG codec, and
c2pa-python's Reader for the signed manifests.
"""
from __future__ import annotations

import datetime
import importlib.util
import json
import pathlib
import subprocess
import sys

import cv2
import numpy as np
import pytest
from PIL import Image

from data import provenance, watermark
from data.faces import video_out
from data.synthetic import SyntheticFaces

pytestmark = pytest.mark.skipif(not watermark.available(), reason=watermark.INSTALL)


def face(size: int, index: int = 0) -> np.ndarray:
    return SyntheticFaces(range(3), 2, size, split="test")[index]["image"]


def library(name: str):
    """invisible-watermark's `maxDct` or `dwtDctSvd` module, loaded from its file: the package's __init__ imports torch."""
    spec = importlib.util.find_spec("imwatermark")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("the reference invisible-watermark is not installed: pip install --no-deps invisible-watermark==0.2.0")
    path = pathlib.Path(list(spec.submodule_search_locations)[0]) / f"{name}.py"
    loaded = importlib.util.spec_from_file_location(f"imwatermark_{name}", path)
    module = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(module)
    return module


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b) ** 2)))


@pytest.fixture(autouse=True)
def no_signing(monkeypatch):
    """Tests sign only where they configure a certificate themselves."""
    for name in (provenance.C2PA_CERT_ENV, provenance.C2PA_KEY_ENV, provenance.C2PA_TRUST_ENV):
        monkeypatch.delenv(name, raising=False)


@pytest.mark.parametrize("size", [64, 256])
def test_a_png_written_by_save_png_carries_the_payload(tmp_path, size):
    image = face(size)
    path = provenance.save_png(tmp_path / "fake.png", image, {"Model": "dcgan"})
    with Image.open(path) as png:
        pixels, chunks = np.asarray(png), dict(png.text)
    assert pixels.shape == image.shape, "the written pixels keep their size"
    assert watermark.detect(pixels) == watermark.PAYLOAD == b"DFZ\x01synt"
    assert watermark.bit_errors(pixels) == 0
    assert 39.0 < psnr(pixels, image) < 60.0, "the mark changes the pixels, slightly"
    assert chunks["Watermark"].startswith("invisible-watermark") and "C2PA" in chunks
    # invisible-watermark's own reader: its BGR->YUV, its per-block decision, its majority vote.
    reader = library("dwtDctSvd").EmbedDwtDctSvd([], wmLen=64, scales=[0, 36, 0], block=4)
    bits = reader.decode(cv2.cvtColor(pixels, cv2.COLOR_RGB2BGR)).astype(int)
    expected = np.unpackbits(np.frombuffer(b"DFZ\x01synt", np.uint8))
    assert np.sum(bits != expected) <= (0 if size == 256 else 2)


@pytest.mark.parametrize("method,module,cls", [("dwtDctSvd", "dwtDctSvd", "EmbedDwtDctSvd"),
                                               ("dwtDct", "maxDct", "EmbedMaxDct")])
def test_the_batched_quantiser_is_the_librarys(method, module, cls):
    """Every block of a real LL band quantised here as invisible-watermark's per-block encode_frame does."""
    import pywt

    plane = watermark._plane(face(128, 2))
    ll, _ = pywt.dwt2(plane, "haar")
    bits = watermark.payload_bits()
    reference = ll.copy()
    getattr(library(module), cls)(list(bits), wmLen=64, block=4).encode_frame(reference, 36.0)
    blocks, put_back = watermark._blocks(ll)
    put_back(watermark._quantise(blocks, bits[np.arange(len(blocks)) % 64], 36.0, method))
    np.testing.assert_allclose(ll, reference, atol=1e-9)
    assert np.abs(ll - pywt.dwt2(plane, "haar")[0]).max() > 1.0, "the band did change"


def test_grey_images_carry_it_in_their_only_plane(tmp_path):
    grey = face(128)[..., :1].copy()
    path = provenance.save_png(tmp_path / "grey.png", grey, {})
    with Image.open(path) as png:
        assert png.mode == "L"
        assert watermark.detect(np.asarray(png)) == watermark.PAYLOAD


def test_it_survives_a_jpeg_re_save_at_256_px(tmp_path):
    path = provenance.save_png(tmp_path / "fake.png", face(256, 1), {})
    Image.open(path).convert("RGB").save(tmp_path / "fake.jpg", quality=75)
    assert watermark.detect(np.asarray(Image.open(tmp_path / "fake.jpg"))) == watermark.PAYLOAD


def test_unmarked_images_do_not_carry_it(shared_data):
    from scipy.io import loadmat
    from skimage import data as samples

    faces = loadmat(shared_data / "olivetti" / "olivettifaces.mat")["faces"].T.reshape(400, 64, 64)
    images = [np.ascontiguousarray(f.T) for f in faces[::8]] + [samples.astronaut(), samples.coffee(),
                                                                 face(64), face(256)]
    errors = [watermark.bit_errors(x) for x in images]
    assert all(watermark.detect(x) is None for x in images)
    assert min(errors) > watermark.MAX_BIT_ERRORS


def test_real_faces_and_small_images_are_not_marked(tmp_path):
    image = face(64)
    path = provenance.save_png(tmp_path / "real.png", image, {}, notice=provenance.EXTRACTED_NOTICE)
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), image) and "Watermark" not in png.text
    small = face(32)
    path = provenance.save_png(tmp_path / "small.png", small, {})
    with Image.open(path) as png:
        assert np.array_equal(np.asarray(png), small)
        assert png.text["Watermark"].startswith("not applied: a 32x32 image holds 16 of the payload's 64 bits")


def test_check_exits_0_when_marked_1_when_not_2_for_no_file(tmp_path, capsys):
    marked = provenance.save_png(tmp_path / "marked.png", face(64), {"Model": "swap_df"})
    plain = tmp_path / "plain.png"
    Image.fromarray(face(64)).save(plain)
    assert provenance.main(["check", str(marked)]) == 0
    out = capsys.readouterr().out
    assert "watermark: found b'DFZ\\x01synt' (0/64 bits" in out and "text chunk Model: swap_df" in out
    assert provenance.main(["check", str(plain)]) == 1
    assert "watermark: not found" in capsys.readouterr().out
    assert provenance.main(["check", str(tmp_path / "missing.png")]) == 2
    proc = subprocess.run([sys.executable, "-m", "data.provenance", "check", str(marked)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr


def test_video_frames_are_marked_and_checked(tmp_path, capsys):
    frames = [face(256, i % 6) for i in range(6)]
    out = video_out.write_mp4(tmp_path / "fake.mp4", iter(frames), fps=25, crf=23).path
    decoded = list(video_out.read_frames(out))
    assert all(watermark.detect(f) == watermark.PAYLOAD for f in decoded)
    sidecar = json.loads((tmp_path / "fake.mp4.json").read_text())
    assert sidecar["Watermark"].startswith("invisible-watermark") and sidecar["C2PA"].startswith("not applied")
    assert provenance.main(["check", str(out)]) == 0
    assert "found b'DFZ\\x01synt' in 6 of 6 frames" in capsys.readouterr().out
    plain = video_out.write_mp4(tmp_path / "plain.mp4", iter(frames), fps=25, crf=23, watermark=False).path
    assert provenance.main(["check", str(plain)]) == 1
    pngs = video_out.write_pngs(tmp_path / "pngs", [("f0", frames[0])], {"Model": "swap_df"}).path
    assert watermark.detect(np.asarray(Image.open(pngs / "f0.png"))) == watermark.PAYLOAD


# --- C2PA -----------------------------------------------------------------------------------------------------

def certificate_chain(tmp_path, self_signed: bool = False, eku: bool = True):
    """A test CA and an ES256 signing certificate with what c2pa requires; paths of (chain, key, root).

    c2pa-python 0.38 signs only with a certificate that has the digitalSignature key usage, an extended key
    usage it accepts (emailProtection here) and an authority key identifier; `eku=False` leaves that out.
    """
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def name(common: str) -> x509.Name:
        return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common),
                          x509.NameAttribute(NameOID.ORGANIZATION_NAME, "deepfake-zoo test lab")])

    def usage(sign: bool, certs: bool) -> x509.KeyUsage:
        return x509.KeyUsage(digital_signature=sign, content_commitment=False, key_encipherment=False,
                             data_encipherment=False, key_agreement=False, key_cert_sign=certs, crl_sign=certs,
                             encipher_only=False, decipher_only=False)

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca = (x509.CertificateBuilder().subject_name(name("zoo test CA")).issuer_name(name("zoo test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(usage(False, True), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    issuer, issuer_key = (name("zoo test signer"), key) if self_signed else (ca.subject, ca_key)
    leaf = (x509.CertificateBuilder().subject_name(name("zoo test signer")).issuer_name(issuer)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1)).not_valid_after(now + datetime.timedelta(days=7))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(usage(True, False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()),
                           critical=False))
    if eku:
        leaf = leaf.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.EMAIL_PROTECTION]), critical=False)
    leaf = leaf.sign(issuer_key, hashes.SHA256())
    pem = serialization.Encoding.PEM
    chain, key_file, root = tmp_path / "chain.pem", tmp_path / "key.pem", tmp_path / "root.pem"
    chain.write_bytes(leaf.public_bytes(pem) + (b"" if self_signed else ca.public_bytes(pem)))
    key_file.write_bytes(key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    root.write_bytes(ca.public_bytes(pem))
    return chain, key_file, root


def read_manifest(path, mime: str) -> dict:
    import c2pa

    with open(path, "rb") as stream, c2pa.Reader(mime, stream) as reader:
        store = json.loads(reader.json())
    return store["manifests"][store["active_manifest"]] | {"validation_state": store.get("validation_state")}


def test_c2pa_credentials_are_signed_on_png_and_mp4(tmp_path, monkeypatch, capsys):
    pytest.importorskip("c2pa", reason="c2pa-python is not installed: pip install c2pa-python")
    chain, key, root = certificate_chain(tmp_path)
    monkeypatch.setenv(provenance.C2PA_CERT_ENV, str(chain))
    monkeypatch.setenv(provenance.C2PA_KEY_ENV, str(key))
    path = provenance.save_png(tmp_path / "signed.png", face(64), {"Model": "dcgan"})
    manifest = read_manifest(path, "image/png")
    assert manifest["signature_info"]["common_name"] == "zoo test signer"
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert actions[0]["digitalSourceType"].endswith("/trainedAlgorithmicMedia")
    ours = next(a for a in manifest["assertions"] if a["label"] == "org.deepfakezoo.provenance")["data"]
    assert ours["Model"] == "dcgan" and ours["Description"] == provenance.NOTICE
    assert manifest["validation_state"] == "Valid", "signature valid; the test CA is in no trust list"
    with Image.open(path) as png:
        assert png.text["C2PA"].startswith("signed Content Credentials")
        assert watermark.detect(np.asarray(png)) == watermark.PAYLOAD
    monkeypatch.setenv(provenance.C2PA_TRUST_ENV, str(root))
    assert provenance.main(["check", str(path)]) == 0
    assert "signed by zoo test signer (deepfake-zoo test lab), validation Trusted" in capsys.readouterr().out
    video = video_out.write_mp4(tmp_path / "signed.mp4", iter([face(64, i) for i in range(4)]), fps=25).path
    manifest = read_manifest(video, "video/mp4")
    actions = next(a for a in manifest["assertions"] if a["label"].startswith("c2pa.actions"))["data"]["actions"]
    assert actions[0]["digitalSourceType"].endswith("/compositeWithTrainedAlgorithmicMedia")
    assert json.loads((tmp_path / "signed.mp4.json").read_text())["C2PA"].startswith("signed")


def test_a_self_signed_certificate_signs_but_reads_untrusted(tmp_path, monkeypatch):
    pytest.importorskip("c2pa", reason="c2pa-python is not installed: pip install c2pa-python")
    chain, key, _ = certificate_chain(tmp_path, self_signed=True)
    monkeypatch.setenv(provenance.C2PA_CERT_ENV, str(chain))
    monkeypatch.setenv(provenance.C2PA_KEY_ENV, str(key))
    path = provenance.save_png(tmp_path / "self.png", face(64), {})
    summary = provenance.c2pa_summary(path, "image/png")
    assert summary is not None and summary.endswith("validation Valid (signingCredential.untrusted)")
    monkeypatch.setenv(provenance.C2PA_TRUST_ENV, str(chain))
    assert provenance.c2pa_summary(path, "image/png").endswith("validation Trusted")


def test_c2pa_refusing_a_certificate_never_fails_the_save(tmp_path, monkeypatch):
    pytest.importorskip("c2pa", reason="c2pa-python is not installed: pip install c2pa-python")
    chain, key, _ = certificate_chain(tmp_path, eku=False)
    monkeypatch.setenv(provenance.C2PA_CERT_ENV, str(chain))
    monkeypatch.setenv(provenance.C2PA_KEY_ENV, str(key))
    path = provenance.save_png(tmp_path / "unsigned.png", face(64), {})
    with Image.open(path) as png:
        assert png.text["C2PA"].startswith("not applied: c2pa refused to sign")
        assert watermark.detect(np.asarray(png)) == watermark.PAYLOAD
    assert provenance.c2pa_summary(path, "image/png") is None
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_no_certificate_is_recorded_as_not_applied(tmp_path):
    path = provenance.save_png(tmp_path / "plain.png", face(64), {})
    with Image.open(path) as png:
        assert png.text["C2PA"] == ("not applied: no signing certificate configured "
                                    f"({provenance.C2PA_CERT_ENV}, {provenance.C2PA_KEY_ENV})")
