"""Real-time alerts: detectors on the node that report misuse as it happens.

An alert is an audit row ``alert.<name>``, a marker in the recording of the
session concerned (when there is one) and a notification to the sinks.
"""
