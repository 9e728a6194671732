"""`python -m kallm`: the same as the `kallm` command."""

from kallm.cli.main import main

if __name__ == "__main__":
    main()
