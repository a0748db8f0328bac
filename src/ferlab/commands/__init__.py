"""One module per ``ferlab`` subcommand; each exposes ``add_parser(subparsers)``."""
