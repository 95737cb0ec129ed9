"""The base of every error curation reports to a user (bad input, bad config, an environment that
cannot run the job). The CLI prints such an error's message, which names the file and says what to do,
and never a traceback; anything else is a bug and is reported as one."""

from __future__ import annotations


class CurationError(Exception):
    """An error whose message is meant for the user. `exit_code`: 1 for bad input or a failed run,
    2 for a bad config or command line."""

    exit_code = 1


class ShardFailure(CurationError, RuntimeError):
    """A stage failed on a shard in a way no rule foresaw (a stage's bug, or input no check caught):
    the message names the shard and the stage; nothing of the shard was committed."""
