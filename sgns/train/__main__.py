"""`python -m sgns.train [overrides]`: the same as `sgns-train`."""

from sgns.cli.train import main

if __name__ == "__main__":
    main()
