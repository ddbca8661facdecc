"""What a target host needs to trust the bastion, as text an admin can paste.

One source for ``bastion target setup``, ``deploy/`` and the throwaway sshd the
demo and the tests start, so what we document is what we test.
"""

from __future__ import annotations

from collections.abc import Sequence

from bastion.store.models import Target

CA_FILE = "/etc/ssh/bastion_user_ca.pub"
PRINCIPALS_DIR = "/etc/ssh/auth_principals"


def default_principal(target_name: str) -> str:
    """The principal a target accepts when the admin names none: unique per target."""
    return f"bastion-{target_name}"


def sshd_config_lines(ca_file: str = CA_FILE, principals_dir: str = PRINCIPALS_DIR) -> list[str]:
    """The sshd_config lines that make a host accept the bastion's certificates.

    ``AuthorizedPrincipalsFile`` is what scopes a certificate to one host: the
    certificate's principal must be listed for the login, and each target lists
    only its own.
    """
    return [
        f"TrustedUserCAKeys {ca_file}",
        f"AuthorizedPrincipalsFile {principals_dir}/%u",
    ]


def render_target_setup(target: Target, ca_public_line: str) -> str:
    """Step-by-step instructions (shell + sshd_config) for one target."""
    logins: Sequence[str] = target.logins or ("LOGIN",)
    lines = [
        f"# Setup for target {target.name} ({target.host}:{target.port}); run as root there.",
        "",
        "# 1. Trust the bastion's user certificate authority:",
        f"cat > {CA_FILE} <<'EOF'",
        ca_public_line,
        "EOF",
        "",
        "# 2. Accept only this target's principal for each login the bastion may use:",
        f"install -d -m 0755 {PRINCIPALS_DIR}",
    ]
    for login in logins:
        lines.append(f"echo '{target.principal}' > {PRINCIPALS_DIR}/{login}")
    lines += [
        "",
        "# 3. Add these lines to /etc/ssh/sshd_config (before any Match block):",
        *sshd_config_lines(),
        "",
        "# 4. Check the configuration and reload sshd:",
        "sshd -t && systemctl reload ssh",
        "",
        "# Pin this host's key on the bastion (if not done at 'target add'):",
        f"#   bastion target add {target.name} --ssh {target.host}:{target.port} "
        f"--login {logins[0]} --host-key /etc/ssh/ssh_host_ed25519_key.pub",
    ]
    return "\n".join(lines) + "\n"
