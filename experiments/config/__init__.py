"""The typed configuration: the dataclasses (schema; each checks its own fields' ranges, facemogle.rules),
reading and writing YAML (load, which names a refused value's full key and source), and the start-up checks
across keys and files (checks)."""
