"""The benchmark harness (`make bench`): outside the installed package; it imports kyam_lib like any user."""
