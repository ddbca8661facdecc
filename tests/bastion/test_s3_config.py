"""``[recording] storage`` and ``[recording.s3]``: what is accepted, and what is refused why."""

from __future__ import annotations

from pathlib import Path

import pytest

from bastion.config import load_config
from bastion.errors import ConfigError
from bastion.s3_config import S3Config, parse_storage
from bastion.s3store import S3Location, is_s3_location


def test_local_is_the_default() -> None:
    assert parse_storage({}) is None
    assert parse_storage({"storage": "local"}) is None


def test_an_s3_url_with_endpoint_and_region() -> None:
    got = parse_storage(
        {
            "storage": "s3://audit-recs/bastion/prod/",
            "s3": {"endpoint_url": "http://minio:9000", "region": "eu-west-1", "retry_max": 5},
        }
    )
    assert got == S3Config("audit-recs", "bastion/prod", "http://minio:9000", "eu-west-1", 5.0)
    assert got.url == "s3://audit-recs/bastion/prod"
    assert got.key_for("2026/12/03/s1.bastrec") == "bastion/prod/2026/12/03/s1.bastrec"
    assert parse_storage({"storage": "s3://audit-recs"}) == S3Config("audit-recs")


@pytest.mark.parametrize(
    "key", ["aws_access_key_id", "aws_secret_access_key", "secret_key", "session_token"]
)
def test_a_credential_in_the_file_is_refused_with_the_fix(key: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_storage({"storage": "s3://audit-recs", "s3": {key: "AKIA..."}})
    assert key in str(e.value)
    assert "AWS_ACCESS_KEY_ID" in str(e.value) and "instance" in str(e.value)


@pytest.mark.parametrize(
    ("rec", "words"),
    [
        ({"storage": "gs://x"}, "s3://bucket/prefix"),
        ({"storage": "s3://A_B"}, "not an S3 bucket name"),
        ({"storage": "s3://recs/a/../b"}, "plain path segments"),
        ({"storage": "s3://recs", "s3": {"endpoint_url": "minio:9000"}}, "http:// or https://"),
        ({"storage": "s3://recs", "s3": {"endpoint_url": "http://u:p@m:9000"}}, "user name"),
        ({"storage": "s3://recs", "s3": {"multipart_threshold": 1024}}, "smallest part"),
        ({"storage": "s3://recs", "s3": {"retry_max": 0}}, "seconds > 0"),
        ({"storage": "s3://recs", "s3": {"regoin": "x"}}, "unknown key [recording.s3] regoin"),
    ],
)
def test_bad_settings_name_the_fix(rec: dict[str, object], words: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse_storage(rec)
    assert words in str(e.value)


def test_the_config_file_reads_the_table(tmp_path: Path) -> None:
    path = tmp_path / "bastion.toml"
    path.write_text(
        '[recording]\nstorage = "s3://recs/p"\n\n[recording.s3]\n'
        'endpoint_url = "https://rgw.example:443"\nregion = "default"\n'
    )
    config = load_config(path)
    assert config.recording_s3 == S3Config("recs", "p", "https://rgw.example:443", "default")
    assert load_config(path).recordings_dir == tmp_path / "recordings"  # the spool


def test_locations() -> None:
    loc = S3Location.parse("s3://recs/p/2026/12/03/s1.bastrec")
    assert (loc.bucket, loc.key) == ("recs", "p/2026/12/03/s1.bastrec")
    assert str(loc) == "s3://recs/p/2026/12/03/s1.bastrec"
    assert not is_s3_location("2026/12/03/s1.bastrec")
    for bad in ("s3://recs", "s3:///key", "2026/12/03/s1.bastrec"):
        with pytest.raises(ValueError):
            S3Location.parse(bad)
