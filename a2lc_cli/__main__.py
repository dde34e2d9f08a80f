from a2lc_cli.cli import main

main()
