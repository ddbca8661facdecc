"""bastion: a privileged-session bastion for SSH and PostgreSQL.

Contractors reach targets only through it, after public key + TOTP, only while
a time-boxed grant allows it; the bastion logs in upstream with short-lived
credentials the contractor never sees.
"""

__version__ = "0.1.0"
