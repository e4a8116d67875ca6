"""The typed configuration: the dataclasses (schema), their range rules (rules), reading and writing YAML
(load), and the start-up checks across keys and files (checks)."""
