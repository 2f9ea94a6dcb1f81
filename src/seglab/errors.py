"""The one error type that the command line turns into a one-line message and exit code 2."""


class SeglabError(Exception):
    """A problem with the user's input (a file, a folder, a run, an option), stated in one line.

    The message names the file or option and the problem; `seglab` prints it and exits with 2.
    """
