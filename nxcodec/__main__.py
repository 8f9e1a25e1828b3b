"""``python -m nxcodec``: the command line, for machines where the console script is not installed."""

from nxcodec.cli import main

main()
