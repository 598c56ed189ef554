from ferkit.cli import main

raise SystemExit(main())
