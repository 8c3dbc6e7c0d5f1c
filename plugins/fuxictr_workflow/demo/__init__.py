"""The embedded demo's parts: synthetic CTR data, and the FuXiCTR config and small models a
training server without a config dir of its own trains. Not part of the runner bundle: the
operators ship the demo's files (runner_bundle.ship_demo) only to such a server."""
