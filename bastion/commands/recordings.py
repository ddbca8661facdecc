"""The argument parsers of ``bastion.cli_recordings``'s commands (their handlers load lazily)."""

from __future__ import annotations

import argparse

from bastion.commands import AddOpt, Sub, lazy

#: ``bastion verify`` exit codes (1 = error such as an unknown session, 2 = usage).
EXIT_INTACT = 0
EXIT_TRUNCATED = 3
EXIT_ALTERED = 4
EXIT_MISSING = 5

VERIFY_EXIT_CODES = f"""\
exit status:
  {EXIT_INTACT}  intact: closed by the bastion, every hash and signature valid
  {EXIT_TRUNCATED}  truncated: cut short (a crash, or a file without its end); what is
     there is authentic up to the sequence number printed
  {EXIT_ALTERED}  altered: changed, reordered, signed by another key, or not the file the
     state store recorded for the session; the first bad chunk is printed
  {EXIT_MISSING}  missing: the session has no recording, or its file is gone
  1  error (unknown session, unreadable key or config); 2  usage error

example (an auditor with a copy and the public key, no bastion config):
  bastion verify copy.bastrec --key recording_signing_key.pub
"""


def add_recording_commands(sub: Sub, add_config: AddOpt, add_json: AddOpt) -> None:
    """``bastion verify``, ``bastion export`` and ``bastion recordings pending``."""
    p = sub.add_parser(
        "verify",
        help="check a recording: intact, truncated or altered (exit 0 only if intact)",
        description=(
            "Check a recording's hash chain and signatures.\n\n"
            "SESSION_ID: check the file the bastion stored for the session against the\n"
            "final hash kept in the state store, so a swapped, rewritten or cut file is\n"
            "caught (needs the config).\n"
            "FILE: needs no config or state store, only the node's public key (--key);\n"
            "add --expect-hash to pin the final hash.\n"
            "s3://BUCKET/KEY: an uploaded recording, read like a FILE with ranged GETs\n"
            "(endpoint and region from the config's [recording.s3], else from boto3's\n"
            "environment: AWS_ENDPOINT_URL_S3, AWS_REGION; credentials never in files)."
        ),
        epilog=VERIFY_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "recording",
        metavar="FILE|SESSION_ID|s3://BUCKET/KEY",
        help="recording file, session id, or an object in S3 storage",
    )
    p.add_argument(
        "--key",
        metavar="PUBKEY_PEM",
        help="the node's recording public key (default: <recording.signing_key>.pub "
        "from the config)",
    )
    p.add_argument(
        "--expect-hash",
        metavar="HEX",
        help="for a FILE: the final hash recorded at close (catches a cut or swapped copy)",
    )
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_recordings:cmd_verify"))

    p = sub.add_parser(
        "export",
        help="write a recording as asciicast v2, JSON lines or raw output bytes",
        description=(
            "Convert a recording (SESSION_ID, or a FILE: no config needed) to an open "
            "format. asciicast: asciicast v2 for 'asciinema play' / 'asciinema cat' "
            "(output, input, resizes, markers). jsonl: a header line then one JSON object "
            "per event, lossless (non-UTF-8 bytes as base64). raw: the terminal output "
            "bytes exactly as recorded. The export does not verify: run 'bastion verify'."
        ),
    )
    p.add_argument(
        "recording",
        metavar="SESSION_ID|FILE|s3://BUCKET/KEY",
        help="session id, recording file, or an object in S3 storage",
    )
    p.add_argument(
        "--format",
        "-f",
        choices=["asciicast", "jsonl", "raw"],
        default="asciicast",
        help="output format (default: asciicast)",
    )
    p.add_argument(
        "-o", "--output", metavar="FILE", help="write to FILE (default: standard output)"
    )
    p.add_argument(
        "--no-input", action="store_true", help="asciicast: leave out what the user typed"
    )
    add_config(p)
    p.set_defaults(func=lazy("bastion.cli_recordings:cmd_export"))

    recordings = sub.add_parser(
        "recordings",
        help="recordings in S3 storage: what is still only in a node's spool",
        description="Recordings and their storage ([recording] storage).",
    )
    rs = recordings.add_subparsers(dest="recordings_command", metavar="ACTION", required=True)
    p = rs.add_parser(
        "pending",
        help="ended sessions whose recordings are not uploaded yet, with their node",
        description=(
            'With [recording] storage = "s3://...", each node keeps a recording in its '
            "spool ([recording] dir) until it is uploaded. This lists the ended sessions "
            "whose recordings are still only there, oldest first, with the node that holds "
            "them (and, for this node's spool, the file size). A node uploads its own at "
            "start and retries failed uploads with back-off; see its log for the cause."
        ),
    )
    p.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")
    add_config(p)
    add_json(p)
    p.set_defaults(func=lazy("bastion.cli_recordings:cmd_recordings_pending"))
