"""One module per subcommand: parse arguments, call the engine and a head, write outputs."""
