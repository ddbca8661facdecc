"""The console's screens: sessions browser, player, live view, and their dialogs."""
