"""The session core: one lifecycle for every protocol, and the hooks that judge sessions.

- ``lifecycle``: the pure state machine (admitted → recording → live → ending → ended).
- ``admission``: which grant lets a user reach a target now (one place for every protocol).
- ``core``: ``Session``, which owns every step of a session's life; adapters feed it.
- ``hooks``: where access, policy and alert features plug in.
- ``timebox``: live sessions warned and ended at their grant's end, idle or revoked.
- ``records``: the recording and session-row steps (fail closed, seal, repack).
- ``registry`` and ``drain``: every session of a node, and the routine stop.
- ``reasons``: end and refusal reasons as named constants with words for people.
"""
