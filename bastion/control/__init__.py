"""The node's control API: admins and auditors list, search, watch and stop sessions;
approvers (and admins) decide access requests.

Newline-delimited JSON over a Unix socket (or TCP with TLS and a token); see
``server`` for the node side, ``client.ControlClient`` for the one client library
the TUI and the ``bastion control`` commands use, and ``messages`` for the types.
"""
