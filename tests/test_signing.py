"""Signed bundles: `edgecls sign`, `verify`, `export --sign-key` and `run --trust` refusing a
bundle that is not, file for file, what the trusted key signed, with one line and exit 2,
before any of it is believed; without --trust nothing changes."""

import json
import shutil
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from typer.testing import CliRunner

from edgecls.bundle.signing import SIGNATURE
from edgecls.cli import app


def _keys(folder: Path, name: str) -> tuple[Path, Path]:
    """An EC P-256 key pair as PEM files, as `openssl ecparam -name prime256v1` makes them."""
    key = ec.generate_private_key(ec.SECP256R1())
    private, public = folder / f"{name}.pem", folder / f"{name}.pub.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private, public


@pytest.fixture
def signed(int8_bundle, tmp_path):
    bundle = shutil.copytree(int8_bundle, tmp_path / "bundle")
    private, public = _keys(tmp_path, "line")
    result = CliRunner().invoke(app, ["sign", str(bundle), "--key", str(private)])
    assert result.exit_code == 0, result.output
    assert (bundle / SIGNATURE).is_file()
    return bundle, public


def _run(bundle: Path, trust: Path, source: Path):
    args = ["run", str(bundle), "--trust", str(trust), "--source", str(source)]
    return CliRunner().invoke(app, [*args, "--headless", "--max-frames", "3", "--json"])


def _refused(result, *words: str) -> None:
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.output
    for word in words:
        assert word in lines[0], lines[0]


def _listing(folder: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_a_signed_bundle_verifies_and_runs_under_trust(signed, insects_data):
    bundle, public = signed
    result = CliRunner().invoke(app, ["verify", str(bundle), "--trust", str(public)])
    assert result.exit_code == 0 and "every file as signed" in result.output
    images = next((insects_data / "test").iterdir())
    result = _run(bundle, public, images)
    assert result.exit_code == 0, result.output
    assert len([line for line in result.stdout.splitlines() if line.startswith("{")]) == 3


def test_a_flipped_byte_in_any_file_is_refused_at_start(signed, insects_data):
    bundle, public = signed
    images = next((insects_data / "test").iterdir())
    files = [p for p in sorted(bundle.iterdir()) if p.name != SIGNATURE]
    assert {"manifest.json", "labels.txt", "model_int8.tflite"} <= {p.name for p in files}
    for path in files:
        original = path.read_bytes()
        path.write_bytes(original[:-1] + bytes([original[-1] ^ 0x01]))
        before = _listing(bundle)
        _refused(_run(bundle, public, images), path.name, "changed since it was signed")
        assert _listing(bundle) == before  # nothing written, nothing removed
        path.write_bytes(original)
    assert _run(bundle, public, images).exit_code == 0  # whole again: runs


def test_an_added_file_a_missing_one_another_key_unsigned_and_garbage_are_refused(
    signed, insects_data, tmp_path
):
    bundle, public = signed
    images = next((insects_data / "test").iterdir())
    (bundle / "extra.txt").write_text("not signed\n")
    _refused(_run(bundle, public, images), "extra.txt added")
    (bundle / "extra.txt").unlink()
    moved = (bundle / "parity.md").rename(tmp_path / "parity.md")
    _refused(_run(bundle, public, images), "parity.md missing")
    moved.rename(bundle / "parity.md")
    _, other = _keys(tmp_path, "other")
    _refused(_run(bundle, other, images), "signed by another key")
    signature = (bundle / SIGNATURE).read_bytes()
    (bundle / SIGNATURE).write_text("{ not a signature")
    _refused(_run(bundle, public, images), "not a signature")
    (bundle / SIGNATURE).unlink()
    _refused(_run(bundle, public, images), "unsigned", "edgecls sign")
    _refused(_run(bundle, tmp_path / "nowhere.pem", images), "--trust", "not found")
    (bundle / SIGNATURE).write_bytes(signature)
    result = CliRunner().invoke(app, ["verify", str(bundle), "--trust", str(public)])
    assert result.exit_code == 0, result.output


def test_without_trust_nothing_changes_and_a_device_file_takes_trust(signed, insects_data):
    bundle, public = signed
    images = next((insects_data / "test").iterdir())
    (bundle / SIGNATURE).unlink()  # unsigned: runs as it always did
    args = ["run", str(bundle), "--source", str(images), "--headless", "--max-frames", "2"]
    assert CliRunner().invoke(app, args).exit_code == 0
    device = bundle.parent / "device.yaml"
    device.write_text(f"bundle: {bundle}\ntrust: {public}\nsource: {images}\nheadless: true\n")
    result = CliRunner().invoke(app, ["run", "--config", str(device), "--max-frames", "2"])
    _refused(result, "unsigned")


def test_export_signs_the_bundle_it_publishes_and_checks_the_key_first(insects_run, tmp_path):
    private, public = _keys(tmp_path, "ws")
    out = tmp_path / "signed"
    base = ["export", str(insects_run), "--format", "tflite", "--out", str(out)]
    missing = CliRunner().invoke(app, [*base, "--sign-key", str(tmp_path / "no.pem")])
    _refused(missing, "--sign-key", "not found")
    assert not out.exists()  # refused before any work
    result = CliRunner().invoke(app, [*base, "--sign-key", str(private)])
    assert result.exit_code == 0, result.output
    assert CliRunner().invoke(app, ["verify", str(out), "--trust", str(public)]).exit_code == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert {a["file"] for a in manifest["artifacts"]} <= {p.name for p in out.iterdir()}


def test_a_parity_record_after_signing_says_to_sign_again(signed, insects_data, tmp_path):
    bundle, public = signed
    runner = CliRunner()
    data = str(insects_data / "test")
    result = runner.invoke(app, ["parity", str(bundle), "--data", data, "--record"])
    assert result.exit_code in (0, 1) and "sign it again" in result.output, result.output
    assert runner.invoke(app, ["verify", str(bundle), "--trust", str(public)]).exit_code == 2
    private = tmp_path / "line.pem"  # the signed fixture's key
    assert runner.invoke(app, ["sign", str(bundle), "--key", str(private)]).exit_code == 0
    assert runner.invoke(app, ["verify", str(bundle), "--trust", str(public)]).exit_code == 0
