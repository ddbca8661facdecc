"""The console's own widgets: terminal view, timeline, query table."""
