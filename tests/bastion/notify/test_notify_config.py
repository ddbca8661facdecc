"""``[[notify.webhook]]`` and ``[[notify.syslog]]`` in bastion.toml, and the node's notifier."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from bastion import audit_actions as actions
from bastion.ca import CertificateAuthority
from bastion.cli_node import init_dir
from bastion.config import CONFIG_TEMPLATE, KNOWN_ARRAY_KEYS, load_config, render_config
from bastion.errors import ConfigError
from bastion.notify import Notification, Notifier, SyslogSink, WebhookSink
from bastion.notify.settings import SyslogConfig, WebhookConfig
from bastion.secretbox import SecretBox
from bastion.service import BastionNode
from bastion.store import open_store
from tests.bastion.notify.receivers import closed_port, eventually
from tests.bastion.notify.test_webhook import FAST

GOOD = """
[[notify.webhook]]
url = "https://hooks.example.com/bastion"
events = ["request.*"]
secret_file = "keys/hook.secret"

[[notify.webhook]]
url = "https://hooks.slack.com/services/T0/B0/XYZ"
format = "slack"
timeout = 3

[[notify.syslog]]
address = "udp://192.0.2.1"
facility = "local3"

[[notify.syslog]]
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bastion.toml"
    path.write_text(text)
    return path


def test_good_sinks(tmp_path: Path) -> None:
    notify = load_config(write(tmp_path, GOOD)).notify
    assert notify.webhooks == (
        WebhookConfig(
            url="https://hooks.example.com/bastion",
            events=("request.*",),
            secret_file=tmp_path / "keys/hook.secret",
        ),
        WebhookConfig(url="https://hooks.slack.com/services/T0/B0/XYZ", format="slack", timeout=3),
    )
    assert notify.syslogs == (
        SyslogConfig(address="udp://192.0.2.1", facility="local3"),
        SyslogConfig(address="/dev/log", facility="authpriv"),
    )
    assert notify.syslogs[0].facility_code == 19
    assert load_config(write(tmp_path, "")).notify.webhooks == ()


def test_the_templates_example_loads_when_uncommented(tmp_path: Path) -> None:
    start = CONFIG_TEMPLATE.index("# [[notify.webhook]]")
    example = "\n".join(
        line.removeprefix("#").removeprefix(" ") for line in CONFIG_TEMPLATE[start:].splitlines()
    )
    assert tomllib.loads(example)["notify"].keys() == {"webhook", "syslog"}
    data = tomllib.loads(example)
    for (section, key), known in KNOWN_ARRAY_KEYS.items():
        assert data[section][key][0].keys() == known  # the example names every key
    path = write(tmp_path, render_config("n1", "127.0.0.1:2222") + example)
    notify = load_config(path).notify
    assert notify.webhooks[0].secret_file == tmp_path / "keys/webhook.secret"
    assert notify.syslogs[0].address == "/dev/log"


@pytest.mark.parametrize(
    ("text", "error"),
    [
        (
            '[[notify.webhook]]\nurl = "https://x"\nsecrett_file = "k"\n',
            r"unknown key \[\[notify.webhook\]\] secrett_file; did you mean 'secret_file'\?",
        ),
        (
            '[[notify.syslog]]\nadress = "/dev/log"\n',
            r"unknown key \[\[notify.syslog\]\] adress; did you mean 'address'\?",
        ),
        (
            '[[notify.webhooks]]\nurl = "https://x"\n',
            r"\[notify\] webhooks; did you mean 'webhook'",
        ),
        ('[notify.webhook]\nurl = "https://x"\n', r"must be an array of tables: write \[\[notify"),
        ('[[notify.webhook]]\nurl = "https://x"\nformat = "xml"\n', r'format must be "json" or'),
        ('[[notify.webhook]]\nurl = "ftp://x/y"\n', r"notify.webhook\[1\].url must be an http"),
        ("[[notify.webhook]]\n", r"notify.webhook\[1\].url must be"),
        ('[[notify.webhook]]\nurl = "https://x"\nevents = []\n', r"events must be a non-empty"),
        ('[[notify.webhook]]\nurl = "https://x"\ntimeout = 0\n', r"timeout must be a positive"),
        ('[[notify.syslog]]\naddress = "tcp://host:x"\n', r"syslog\[1\].address has a bad port"),
        ('[[notify.syslog]]\naddress = "http://host:80"\n', r"address must be a socket path"),
        ('[[notify.syslog]]\nfacility = "security"\n', r"facility must be one of kern, "),
    ],
)
def test_bad_sinks_name_the_setting(tmp_path: Path, text: str, error: str) -> None:
    with pytest.raises(ConfigError, match=error):
        load_config(write(tmp_path, text))


def test_a_missing_secret_file_stops_the_node_building_its_sinks(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, GOOD))
    with pytest.raises(ConfigError, match="hook.secret"):
        Notifier.from_config(config.notify, _no_audit, "n1")
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys/hook.secret").write_text("k\n")
    notifier = Notifier.from_config(config.notify, _no_audit, "n1")
    names = [s.name for s in notifier.sinks]
    # URLs may hold secrets (Slack's do): sink names, which audit rows carry, show the host.
    assert names == [
        "webhook[1]:hooks.example.com",
        "webhook[2]:hooks.slack.com",
        "syslog[1]:udp://192.0.2.1",
        "syslog[2]:/dev/log",
    ]
    assert [type(s) for s in notifier.sinks] == [WebhookSink, WebhookSink, SyslogSink, SyslogSink]


async def _no_audit(actor: str, action: str, subject: str | None = None, **details: object) -> None:
    raise AssertionError("nothing to audit here")


async def test_the_node_audits_a_failed_delivery_in_its_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("BASTION_CONFIG", "BASTION_SECRET_KEY", "BASTION_STATE_URL"):
        monkeypatch.delenv(name, raising=False)
    config = init_dir(tmp_path / "node", "127.0.0.1:0", None, "n1")
    with config.path.open("a") as f:
        f.write(f'\n[[notify.webhook]]\nurl = "http://127.0.0.1:{closed_port()}/hook"\n')
    config = load_config(config.path)
    store = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    node = BastionNode(config, store, CertificateAuthority.load(config.ca_key))
    assert [s.name for s in node.notifier.sinks] == ["webhook[1]:127.0.0.1"]
    node.notifier = Notifier(node.notifier.sinks, node.audit, retry_delays=FAST)
    node.start_background()
    try:
        node.notifier.send(Notification("engagement.ended", node.clock(), "node", "carol"))
        [row] = await eventually(
            lambda: store.list_audit(action_prefix=actions.NOTIFY_FAILED), "the audit row"
        )
        assert (row.actor, row.subject) == ("notify", "webhook[1]:127.0.0.1")
        assert row.details["event"] == "engagement.ended" and row.details["attempts"] == 5
        assert "notifications_pending 0" in node.metrics.render()
        node.notifier.send(Notification("engagement.ended", node.clock(), "node", "dave"))
    finally:
        await node.close()  # flushes: one last attempt, then audited
    rows = open_store(config.state_url, SecretBox.from_env_or_file(config.secret_key_file))
    try:
        audited = rows.list_audit(action_prefix=actions.NOTIFY_FAILED)
    finally:
        rows.close()
    assert len(audited) == 2
