"""`cie`, the command line: main.py runs it, parser.py reads it, commands.py does the work."""
