"""The `ledger` command's groups beyond `cli.py`, one module each, registered there: an
agency's keys (`agency`, `agencies`), tokens, the log's registry for auditors (`audit keys`),
key rotation, exports, backup and restore; with what they share: one clear line for every
error and the exit codes (`errors`), progress bars (`progress`), the ledger over HTTP
(`remote`) and where the deployment is (`deployment`)."""
