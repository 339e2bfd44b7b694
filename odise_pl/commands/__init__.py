"""Sub-commands of ``odise-pl`` (one module each, with ``add_parser(subparsers)``)."""
