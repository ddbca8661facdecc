"""The target menu a contractor sees after ``ssh alice@bastion`` with no target named.

A tiny line editor over a PTY channel: echo, backspace, Enter, Ctrl-C/Ctrl-D.
Pure state machine (``feed`` returns what to echo), so it is tested without SSH.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from bastion.grants import format_time
from bastion.store.models import Grant

MAX_LINE = 128


@dataclass
class LineInput:
    """Collects one line of input typed on a raw PTY."""

    buffer: str = ""
    done: bool = False
    cancelled: bool = False

    def feed(self, data: bytes) -> bytes:
        """Consume typed bytes; return the bytes to echo back."""
        echo = bytearray()
        for ch in data.decode("utf-8", errors="ignore"):
            if self.done:
                break
            if ch in ("\r", "\n"):
                self.done = True
                echo += b"\r\n"
            elif ch in ("\x03", "\x04"):
                self.done = self.cancelled = True
                echo += b"^C\r\n" if ch == "\x03" else b"\r\n"
            elif ch in ("\x7f", "\x08"):
                if self.buffer:
                    self.buffer = self.buffer[:-1]
                    echo += b"\x08 \x08"
            elif ch.isprintable() and len(self.buffer) < MAX_LINE:
                self.buffer += ch
                echo += ch.encode()
        return bytes(echo)


def render_menu(user: str, grants: Sequence[Grant]) -> str:
    """The numbered list of live grants, or a note that there are none."""
    if not grants:
        return (
            f"bastion: {user}, you have no active grants. Ask an admin for one "
            "(bastion grant add).\r\n"
        )
    lines = [f"bastion: choose a target, {user}:", ""]
    for i, g in enumerate(grants, 1):
        lines.append(
            f"  {i:>2}) {g.target_name or '-':<20} as {g.login or '-':<12} "
            f"until {format_time(g.not_after)}  (grant #{g.id}"
            + (f", profile {g.profile_name})" if g.profile_name else ")")
        )
    lines += ["", "Number or name (Enter or Ctrl-C to quit): "]
    return "\r\n".join(lines)


def choose(grants: Sequence[Grant], answer: str) -> Grant | None:
    """The grant picked by number or target name, or None."""
    answer = answer.strip()
    if answer.isdigit():
        i = int(answer)
        return grants[i - 1] if 1 <= i <= len(grants) else None
    for g in grants:
        if g.target_name == answer:
            return g
    return None


USAGE = """\
bastion: name a target. Ways to connect:
  ssh -t alice@BASTION              menu of your grants (needs a terminal)
  ssh -t alice@BASTION TARGET       shell on TARGET
  ssh alice@BASTION TARGET CMD...   run CMD on TARGET
  ssh alice%TARGET@BASTION ...      target in the user name (scp, sftp, rsync, -L)
  ssh alice%TARGET%LOGIN@BASTION    ... as a specific login
  ssh alice@BASTION grants          list your grants
Access requests (approved by someone else; the clock starts at approval):
  ssh alice@BASTION request web1 --for 2h --reason TEXT [--wait]   ask for access
      [--login L] [--allow scp,sftp,port-forward,agent] [--start TIME]
  ssh alice@BASTION request --extend GRANT_ID --for 1h --reason TEXT
  ssh alice@BASTION request web1 --break-glass --reason TEXT       access now, reviewed
  ssh alice@BASTION requests        your requests;  drop GRANT_ID  give access back
  ssh bob@BASTION requests --pending                requests you may decide
  ssh bob@BASTION approve ID [--for SHORTER] [--targets A,B] [--allow X|none] [--reason T]
  ssh bob@BASTION deny ID --reason TEXT
"""
