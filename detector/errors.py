"""Errors caused by the user's input (files, configs, arguments): tools print them on one line and exit 2."""


class UserError(Exception):
    """Bad input; the message names the file, the record and what is wrong."""
