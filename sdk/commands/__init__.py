"""One module per ``semedge`` subcommand (argument parsing and printing only)."""
