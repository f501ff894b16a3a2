from recstack.cli import main

raise SystemExit(main())
