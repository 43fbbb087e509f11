"""The gateway's use of the ``audit`` package: key, log, group-commit writer, receipts."""
