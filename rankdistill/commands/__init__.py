"""One module per command of the ``rankdistill`` command line; see rankdistill/cli.py for the options."""
