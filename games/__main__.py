"""`python -m games …` runs the games CLI."""

from games.cli import main

raise SystemExit(main())
